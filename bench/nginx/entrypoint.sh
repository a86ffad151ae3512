#!/bin/sh
# Fill the timeouts into nginx.conf from the environment, check it, and run nginx in the
# foreground (it stops gracefully on SIGQUIT; SIGTERM is a fast stop).
set -eu
sed -e "s/@CONNECT_TIMEOUT@/${NGINX_CONNECT_TIMEOUT}/g" \
    -e "s/@RESPONSE_TIMEOUT@/${NGINX_RESPONSE_TIMEOUT}/g" \
    /etc/nginx/nginx.conf.template > /etc/nginx/nginx.conf
nginx -t -q
exec nginx -g 'daemon off;'
