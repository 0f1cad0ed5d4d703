#!/bin/sh
# Prints the Debian packages that own the shared libraries the given programs link directly
# (their DT_NEEDED entries), one per line, sorted. The build stage runs this on the installed
# programs and the runtime stage installs exactly that list (apt brings their dependencies),
# so the two stages cannot drift apart.
# usage: runtime-packages.sh PROGRAM...
set -eu
for prog in "$@"; do
  needed=$(readelf -d "$prog" | sed -n 's/.*(NEEDED).*\[\(.*\)\]/\1/p')
  ldd "$prog" | awk -v needed="$needed" '
    BEGIN { n = split(needed, list, "\n"); for (i = 1; i <= n; i++) want[list[i]] = 1 }
    $2 == "=>" && ($1 in want) && $3 ~ /^\// { print $3 }'
done | sort -u | while read -r lib; do
  # dpkg knows a file under the path its package shipped it at; with merged /usr the loader
  # may report the other spelling, and a symlink resolves further.
  for path in "$lib" "/usr$lib" "${lib#/usr}" "$(readlink -f "$lib")"; do
    owner=$(dpkg-query -S "$path" 2>/dev/null | grep -v '^diversion' | head -n1 | cut -d: -f1) || true
    if [ -n "$owner" ]; then echo "$owner"; break; fi
  done
done | sort -u
