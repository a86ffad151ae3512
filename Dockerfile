# rondo: an HTTP load balancer (balancer/, binary `rondo`) and its demo backend (backend/).
#
# Targets:
#   backend   the demo backend     docker build --target backend  -t rondo-backend:local .
#   balancer  the load balancer    docker build --target balancer -t rondo:local .   (the default)
# Both run from `scratch`: the binaries are statically linked against glibc.
#
# Works with the classic builder (no BuildKit-only syntax). On machines where no registry answers,
# run scripts/make-base-images first: it makes a local stand-in for the rust image below.

# ---------------------------------------------------------------------------------------------
FROM rust:1.95-bookworm AS build

ARG TARGET=x86_64-unknown-linux-gnu
# Static glibc so the binaries run in `scratch`. The explicit --target keeps these flags away
# from build scripts and proc-macros (they must stay dynamic).
ENV RUSTFLAGS="-C target-feature=+crt-static" \
    CARGO_TERM_COLOR=never \
    CARGO_INCREMENTAL=0

WORKDIR /src

# 0) llvm-profdata for the profile-guided build (scripts/pgo-build): rustup's llvm-tools
#    component where rustup is, else Debian's llvm-<rustc's LLVM major>.
#    --build-arg RONDO_PGO=off builds without profile (and without llvm-profdata).
ARG RONDO_PGO=on
COPY scripts/pgo-build scripts/pgo-build
RUN RONDO_PGO="$RONDO_PGO" scripts/pgo-build tools \
 && rm -rf /var/lib/apt/lists/*

# 1) Dependencies only, instrumented for the profile-guided build (plain with RONDO_PGO=off),
#    cached as long as the manifests and the lock file do not change. The stub crates' own
#    artifacts and fingerprints are dropped afterwards (cargo clean -p) so the real build below
#    cannot mistake them for up to date. The optimised build of the dependencies cannot be
#    cached: it depends on the profile, which depends on the sources.
COPY Cargo.toml Cargo.lock ./
COPY vendor vendor
COPY backend/Cargo.toml backend/Cargo.toml
COPY balancer/Cargo.toml balancer/Cargo.toml
COPY tests/Cargo.toml tests/Cargo.toml
RUN mkdir -p backend/src balancer/src/bin balancer/benches tests/src \
 && echo 'fn main() {}' > backend/src/main.rs  && : > backend/src/lib.rs \
 && echo 'fn main() {}' > balancer/src/main.rs && : > balancer/src/lib.rs \
 && echo 'fn main() {}' > balancer/src/bin/pgo_train.rs \
 && echo 'fn main() {}' > balancer/benches/selection.rs \
 && : > tests/src/lib.rs \
 && RONDO_PGO="$RONDO_PGO" scripts/pgo-build deps \
 && cargo clean --release --target "$TARGET" -p backend -p balancer \
 && CARGO_TARGET_DIR=target/pgo-instrumented \
    cargo clean --release --target "$TARGET" -p backend -p balancer \
 && rm -rf backend/src balancer/src balancer/benches

# 2) The real sources (tests/ is only a workspace member here: its stub is enough), built with
#    profile-guided optimisation: instrumented, trained on 127.0.0.1 inside this build, then
#    optimised with the profile (scripts/pgo-build; about a fifth less CPU per request).
#    Touching the sources makes sure cargo sees them as newer than anything in the cached
#    layer. The final loop refuses to hand a dynamically linked binary to `scratch`.
COPY backend backend
COPY balancer balancer
RUN find backend balancer -name '*.rs' -exec touch {} + \
 && RONDO_PGO="$RONDO_PGO" scripts/pgo-build \
 && mkdir -p /out/bin /out/etc \
 && cp "target/$TARGET/release/backend" "target/$TARGET/release/rondo" /out/bin/ \
 && echo 'rondo:x:10001:10001:rondo:/nonexistent:/sbin/nologin' > /out/etc/passwd \
 && echo 'rondo:x:10001:' > /out/etc/group \
 && for b in /out/bin/*; do \
      if readelf -lW "$b" | grep -q 'program interpreter' || readelf -dW "$b" | grep -q NEEDED; then \
        echo "$b is not statically linked" >&2; exit 1; \
      fi; \
    done

# ---------------------------------------------------------------------------------------------
FROM scratch AS backend
COPY --from=build /out/etc/passwd /out/etc/group /etc/
COPY --from=build /out/bin/backend /usr/local/bin/backend
ENV PORT=8080 \
    RUST_LOG=info
USER 10001:10001
EXPOSE 8080
HEALTHCHECK --interval=10s --timeout=2s --start-period=5s --retries=3 \
    CMD ["/usr/local/bin/backend", "healthcheck"]
ENTRYPOINT ["/usr/local/bin/backend"]

# ---------------------------------------------------------------------------------------------
FROM scratch AS balancer
COPY --from=build /out/etc/passwd /out/etc/group /etc/
COPY --from=build /out/bin/rondo /usr/local/bin/rondo
ENV RONDO_LISTEN=0.0.0.0:8080 \
    RUST_LOG=info
USER 10001:10001
EXPOSE 8080
HEALTHCHECK --interval=10s --timeout=2s --start-period=5s --retries=3 \
    CMD ["/usr/local/bin/rondo", "healthcheck"]
ENTRYPOINT ["/usr/local/bin/rondo"]
