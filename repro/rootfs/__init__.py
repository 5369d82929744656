"""Root filesystems made of packages (see repro.rootfs._build)."""
