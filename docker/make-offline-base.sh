#!/usr/bin/env bash
# Make a Python base image from Debian's own packages, for sites that cannot pull from a registry:
#   sudo docker/make-offline-base.sh [TAG]          (default TAG: livt-base:bookworm)
# debootstrap (minbase variant, as Debian's official images are made) of bookworm with python3,
# python3-venv and ca-certificates, brought up to date from bookworm-updates and bookworm-security,
# then `docker import`ed. Python runs from a venv, /opt/python, first on PATH, so `python` and `pip`
# mean what they mean in python:3.11-slim. Needs root, debootstrap and a Debian mirror
# (DEBIAN_MIRROR, DEBIAN_SECURITY_MIRROR; default deb.debian.org). The root file system is kept
# as a tarball, build/docker/debian-bookworm-python3.tar (LIVT_DOCKER_CACHE): delete it to remake.
set -euo pipefail

tag=${1:-livt-base:bookworm}
repo=$(cd "$(dirname "$0")/.." && pwd)
cache=${LIVT_DOCKER_CACHE:-$repo/build/docker}
suite=bookworm
mirror=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
security=${DEBIAN_SECURITY_MIRROR:-http://deb.debian.org/debian-security}
tarball=$cache/debian-$suite-python3.tar
docker=${DOCKER:-docker}

if [[ ! -s $tarball ]]; then
    if [[ $(id -u) != 0 ]]; then
        echo "make-offline-base: debootstrap needs root (run with sudo)" >&2
        exit 2
    fi
    command -v debootstrap >/dev/null || {
        echo "make-offline-base: debootstrap is missing (apt-get install debootstrap)" >&2
        exit 2
    }
    mkdir -p "$cache"
    rootfs=$(mktemp -d "$cache/rootfs.XXXXXX")
    chmod 755 "$rootfs" # it becomes the image's /, which mktemp made private to root
    release_mounts() {
        # debootstrap mounts /proc and /sys inside the root file system: never delete through them.
        findmnt -rn -o TARGET | grep -F "$rootfs/" | sort -r | xargs -r -n1 umount -l || true
    }
    cleanup() {
        release_mounts
        rm -rf --one-file-system "$rootfs"
    }
    trap cleanup EXIT
    trap 'exit 130' INT TERM # so that the EXIT trap runs on a signal too

    # dpkg in the chroot reads this: no fsync per file while building a tree that is tarred once
    # complete (a good part of the time on a small VM). Removed before the tarball is made.
    unsafe_io=$rootfs/etc/dpkg/dpkg.cfg.d/livt-build-unsafe-io
    mkdir -p "$(dirname "$unsafe_io")"
    echo force-unsafe-io >"$unsafe_io"

    echo "== debootstrap $suite (minbase + python3) from $mirror"
    debootstrap --variant=minbase --include=python3,python3-venv,ca-certificates \
        "$suite" "$rootfs" "$mirror" >"$cache/debootstrap.log" 2>&1 || {
        tail -20 "$cache/debootstrap.log" >&2
        echo "make-offline-base: debootstrap failed (whole log: $cache/debootstrap.log)" >&2
        exit 1
    }
    echo "== updates from $suite-updates and $suite-security"
    # Only these two suites' package lists: small, where the main suite's takes longer to fetch and
    # read than the upgrade itself. `upgrade` installs no new package, so it needs no other list.
    printf 'deb %s %s-updates main\ndeb %s %s-security main\n' "$mirror" "$suite" "$security" "$suite" \
        >"$rootfs/etc/apt/sources.list"
    chroot "$rootfs" env DEBIAN_FRONTEND=noninteractive sh -c \
        'apt-get -o Acquire::Languages=none update -qq &&
         apt-get upgrade -y -qq && apt-get clean' \
        >>"$cache/debootstrap.log" 2>&1 || {
        tail -20 "$cache/debootstrap.log" >&2
        echo "make-offline-base: apt-get upgrade failed (whole log: $cache/debootstrap.log)" >&2
        exit 1
    }
    printf 'deb %s %s main\ndeb %s %s-updates main\ndeb %s %s-security main\n' \
        "$mirror" "$suite" "$mirror" "$suite" "$security" "$suite" >"$rootfs/etc/apt/sources.list"
    chroot "$rootfs" /usr/bin/python3 -m venv /opt/python
    release_mounts
    # What Debian's own images leave out: package lists and caches, documentation but the
    # copyright files, man pages, translations; and the build host's resolver.
    rm -rf "$rootfs"/var/lib/apt/lists/* "$rootfs"/var/cache/apt/* "$rootfs"/var/log/*.log \
        "$rootfs"/usr/share/man/* "$rootfs"/usr/share/info/* "$rootfs"/usr/share/locale/* \
        "$rootfs"/tmp/* "$rootfs"/root/.cache "$unsafe_io"
    find "$rootfs/usr/share/doc" -mindepth 1 -not -name copyright -not -type d -delete
    find "$rootfs/usr/share/doc" -mindepth 1 -type d -empty -delete
    : >"$rootfs/etc/resolv.conf"
    tar --numeric-owner -C "$rootfs" -cf "$tarball.tmp" .
    mv "$tarball.tmp" "$tarball"
    cleanup
    trap - EXIT
fi

# Every `docker import` makes a new image, and with it a new cache key for every layer built on it:
# import again only when the tarball is not the one the tag was made from.
rootfs_sha=$(sha256sum "$tarball" | cut -d' ' -f1)
imported=$("$docker" image inspect --format '{{index .Config.Labels "livt.rootfs.sha256"}}' "$tag" 2>/dev/null || true)
if [[ $imported == "$rootfs_sha" ]]; then
    echo "== $tag is already $tarball"
else
    echo "== docker import $tarball as $tag"
    "$docker" import \
        --change 'ENV PATH=/opt/python/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
        --change 'ENV LANG=C.UTF-8' \
        --change "LABEL livt.rootfs.sha256=$rootfs_sha" \
        --change 'CMD ["python3"]' \
        --message "debootstrap --variant=minbase $suite + python3, python3-venv, ca-certificates" \
        "$tarball" "$tag" >/dev/null
fi
echo "base image $tag: $("$docker" image inspect --format '{{.Size}}' "$tag" | awk '{printf "%.0f MB", $1 / 1e6}')"
