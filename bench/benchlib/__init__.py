"""The side-by-side benchmark behind `bench/run`: rondo, nginx and HAProxy on one machine.

Layout (one module per concern):
- `procs`: processes we start, their process trees, CPU time and memory read from /proc, free ports;
- `balancers`: the demo backends and the three balancers, each with equivalent settings in its
  own temporary directory (generated nginx.conf and haproxy.cfg);
- `wrk`: runs wrk and reads requests/s and latency percentiles from its output;
- `idle`: holds thousands of idle keep-alive client connections open (scenario 6);
- `compose`: the Compose deployments of rondo and of nginx in the same layout (scenario 7);
- `scenarios`: what each scenario loads and how, and the interleaved rounds;
- `report`: medians and spreads, the markdown table and the SVG chart.
"""
