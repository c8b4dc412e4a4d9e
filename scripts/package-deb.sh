#!/usr/bin/env bash
# Builds the Debian package: bellows_<version>_<arch>.deb in OUT_DIR
# (default target/deb) with the binary, a hardened systemd unit, the default
# config (/etc/bellows/bellows.toml, a conffile), man pages and shell
# completions. The binary is the release build, or $BELLOWS_BIN.
# DEB_COMPRESS: xz (default), gzip or none.
set -euo pipefail
cd "$(dirname "$0")/.."
out="${1:-target/deb}"
. scripts/lib.sh
package_inputs # sets bin and version
arch="$(dpkg --print-architecture)"
stage="$(mktemp -d)"
trap 'rm -rf "$stage"' EXIT
root="$stage/root"

install -D -s -m 0755 "$bin" "$root/usr/bin/bellows"
install -D -m 0644 packaging/deb/bellows.service "$root/usr/lib/systemd/system/bellows.service"
install -D -m 0640 packaging/deb/bellows.toml "$root/etc/bellows/bellows.toml"
"$bin" manpages "$stage/man" 2>/dev/null
gzip -9n "$stage"/man/*.1
install -d "$root/usr/share/man/man1"
install -m 0644 "$stage"/man/*.1.gz "$root/usr/share/man/man1/"
install -d "$root/usr/share/bash-completion/completions" "$root/usr/share/zsh/vendor-completions" \
  "$root/usr/share/fish/vendor_completions.d"
"$bin" completions bash >"$root/usr/share/bash-completion/completions/bellows"
"$bin" completions zsh >"$root/usr/share/zsh/vendor-completions/_bellows"
"$bin" completions fish >"$root/usr/share/fish/vendor_completions.d/bellows.fish"
install -d "$root/usr/share/doc/bellows"
install -m 0644 README.md SECURITY.md "$root/usr/share/doc/bellows/"
printf 'Format: https://www.debian.org/doc/packaging-manuals/copyright-format/1.0/\nUpstream-Name: bellows\n\nFiles: *\nLicense: Apache-2.0\n On Debian systems the full text is in /usr/share/common-licenses/Apache-2.0.\n' \
  >"$root/usr/share/doc/bellows/copyright"

install -d "$root/DEBIAN"
installed_kib="$(du -sk "$root" | cut -f1)"
# The newest glibc symbol version the binary needs, as dpkg-shlibdeps
# would derive it (libgcc_s and libm come with libc6 and libgcc-s1).
glibc="$(objdump -T "$root/usr/bin/bellows" | grep -o 'GLIBC_[0-9.]*' | sed 's/GLIBC_//' | sort -V | tail -n 1)"
cat >"$root/DEBIAN/control" <<CONTROL_END
Package: bellows
Version: $version
Architecture: $arch
Maintainer: Bellows developers <bellows@example.invalid>
Installed-Size: $installed_kib
Depends: adduser, libc6 (>= ${glibc:-2.36}), libgcc-s1
Recommends: ipxe
Suggests: prometheus, qemu-system-x86
Section: admin
Priority: optional
Homepage: https://example.invalid/bellows
Description: bare-metal provisioning server
 Bellows network-boots machines (DHCP, TFTP, HTTP, iPXE), runs the install
 steps their workflow names in an in-memory OS, and brings them up in their
 new role; it also serves instance metadata, collects syslog and drives
 BMCs over IPMI and Redfish. One program, one embedded database.
CONTROL_END
echo /etc/bellows/bellows.toml >"$root/DEBIAN/conffiles"
install -m 0755 packaging/deb/postinst packaging/deb/prerm packaging/deb/postrm "$root/DEBIAN/"

mkdir -p "$out"
deb="$out/bellows_${version}_${arch}.deb"
dpkg-deb --root-owner-group -Z"${DEB_COMPRESS:-xz}" --build "$root" "$deb" >/dev/null
echo "$deb"
