#!/bin/sh
# Install Debian's nginx for the gateway tests, unless it is installed.
#
# The package's install script would start nginx with the default site on
# port 80. A policy-rc.d that exits 101 forbids that start; one is put in
# place only for the install, and only when the machine has none.
set -eu

if command -v nginx >/dev/null 2>&1 || [ -x /usr/sbin/nginx ]; then
    exit 0
fi
if [ "$(id -u)" -ne 0 ]; then
    echo "nginx is missing: run 'apt-get install nginx' as root, or 'make nginx' as root" >&2
    exit 1
fi

policy=/usr/sbin/policy-rc.d
added_policy=no
if [ ! -e "$policy" ]; then
    printf '#!/bin/sh\nexit 101\n' >"$policy"
    chmod 755 "$policy"
    added_policy=yes
fi
status=0
apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nginx || status=$?
if [ "$added_policy" = yes ]; then
    rm -f "$policy"
fi
exit "$status"
