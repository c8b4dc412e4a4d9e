#!/usr/bin/env bash
# Builds the container image `bellows:<version>` (and `bellows:latest`) in
# the Docker engine at $DOCKER_HOST with `docker import`, from nothing but
# what the server needs: the binary (the release build, or $BELLOWS_BIN),
# the C libraries it links (glibc, libgcc_s, libm: the only ones, and glibc
# resolves names itself since 2.34), the CA certificates, Debian's iPXE
# binaries, a non-root user. No shell, no package manager.
# Prints the image name. OUT_TAR: also keep the root file system tar here.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh
package_inputs # sets bin and version
stage="$(mktemp -d)"
trap 'rm -rf "$stage"' EXIT
root="$stage/root"
mkdir -p "$root"/{usr/bin,etc/ssl/certs,usr/lib/ipxe,var/lib/bellows,tmp}
install -s -m 0755 "$bin" "$root/usr/bin/bellows"
# The libraries the dynamic loader will ask for, at the same paths.
for lib in $(ldd "$bin" | awk '/=>/ { print $3 } /ld-linux/ { print $1 }'); do
  mkdir -p "$root$(dirname "$lib")"
  cp -L "$lib" "$root$lib"
done
cp -L /etc/ssl/certs/ca-certificates.crt "$root/etc/ssl/certs/"
for f in undionly.kpxe undionly.kkpxe ipxe.efi snponly.efi ipxe.pxe ipxe.lkrn; do
  [ -e "/usr/lib/ipxe/$f" ] && cp -L "/usr/lib/ipxe/$f" "$root/usr/lib/ipxe/"
done
printf 'root:x:0:0:root:/root:/sbin/nologin\nbellows:x:65532:65532:bellows:/var/lib/bellows:/sbin/nologin\n' >"$root/etc/passwd"
printf 'root:x:0:\nbellows:x:65532:\n' >"$root/etc/group"
printf 'hosts: files dns\n' >"$root/etc/nsswitch.conf"
chmod 1777 "$root/tmp"
chmod 0700 "$root/var/lib/bellows"
tar_file="${OUT_TAR:-$stage/rootfs.tar}"
tar --numeric-owner --owner=0 --group=0 -C "$root" --exclude=./var/lib/bellows -cf "$tar_file" .
# The state directory belongs to the user the server runs as.
tar --numeric-owner --owner=65532 --group=65532 -C "$root" -rf "$tar_file" ./var/lib/bellows
image="bellows:$version"
docker import \
  --change 'USER 65532:65532' \
  --change 'WORKDIR /var/lib/bellows' \
  --change 'ENV BELLOWS_DATA_DIR=/var/lib/bellows BELLOWS_LISTEN=0.0.0.0:42113 BELLOWS_IPXE_DIR=/usr/lib/ipxe' \
  --change 'EXPOSE 42113/tcp 8080/tcp 67/udp 69/udp 514/udp' \
  --change 'VOLUME /var/lib/bellows' \
  --change 'ENTRYPOINT ["/usr/bin/bellows"]' \
  --change 'CMD ["server"]' \
  "$tar_file" "$image" >/dev/null
docker tag "$image" bellows:latest
echo "$image"
