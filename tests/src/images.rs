//! Container images for the real node, built on this machine with buildah: nothing is pulled
//! from any registry.
//!
//! An image is a Containerfile, the files it copies and the images it builds on. buildah builds
//! it inside a [`Sandbox`] (its storage under the sandbox's directory, `chroot` isolation, the `vfs` driver:
//! no daemon, no overlay mounts on the machine) and writes an OCI archive, cached under
//! `~/.cache/kev/images` by a hash of everything that went into it, so a changed input builds a
//! new archive and an unchanged one is built once per machine. containerd imports the archive.

use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};

use crate::sandbox::Sandbox;

/// The test images' tag: the busybox-static release inside them.
pub const BUSYBOX_TAG: &str = "1.35.0";

/// One image: its reference (with an explicit tag: the node never resolves `latest`), the
/// Containerfile and the stage it builds, the files and directories the Containerfile copies
/// (by their path in the build context), and the images its `FROM` lines name, which are built
/// here too and given their reference in the build's storage.
pub struct ImageSpec {
    pub reference: String,
    pub containerfile: String,
    pub target: Option<String>,
    pub files: Vec<(String, PathBuf)>,
    pub bases: Vec<ImageSpec>,
}

/// The packages of the machine (Debian 12) that make the distroless base: what
/// `gcr.io/distroless/cc-debian12` holds that kev's binaries load (glibc, libgcc, libstdc++,
/// OpenSSL) or read (CA certificates, /etc/services).
const DISTROLESS_PACKAGES: [&str; 6] = ["libc6", "libgcc-s1", "libstdc++6", "libssl3", "ca-certificates", "netbase"];

impl ImageSpec {
    /// busybox-static (Debian's, from `scripts/prerequisites.sh`) alone, run as
    /// `/bin/busybox APPLET ...`: the pod sandbox ("pause") image and the test workloads.
    pub fn busybox(reference: &str, entrypoint: &[&str]) -> ImageSpec {
        let entrypoint = serde_json::to_string(entrypoint).unwrap();
        ImageSpec {
            reference: reference.to_string(),
            containerfile: format!(
                "FROM scratch\nCOPY busybox /bin/busybox\nUSER 65532:65532\nENTRYPOINT {entrypoint}\n"
            ),
            target: None,
            files: vec![("busybox".into(), PathBuf::from("/bin/busybox"))],
            bases: Vec::new(),
        }
    }

    /// `gcr.io/distroless/cc-debian12:nonroot`, the base of kev's images, under the name users
    /// pull it by but made from this machine's Debian 12 packages ([`DISTROLESS_PACKAGES`], the
    /// versions the binaries were built against): their files, the CA bundle their
    /// maintainer script generates, and distroless's users (`nonroot` is 65532).
    pub fn distroless_cc(scratch: &Path) -> ImageSpec {
        let rootfs = scratch.join("distroless/rootfs");
        let home = scratch.join("distroless/home");
        if !rootfs.exists() {
            debian_rootfs(&rootfs, &DISTROLESS_PACKAGES);
            std::fs::create_dir_all(home.join("nonroot")).unwrap();
        }
        ImageSpec {
            reference: "gcr.io/distroless/cc-debian12:nonroot".into(),
            containerfile: "FROM scratch\nCOPY rootfs/ /\nCOPY --chown=65532:65532 home/ /home/\n\
                            USER 65532:65532\nWORKDIR /home/nonroot\n"
                .into(),
            target: None,
            files: vec![("rootfs".into(), rootfs), ("home".into(), home)],
            bases: Vec::new(),
        }
    }

    /// The Dockerfile's runtime `target` (`producer` or `enricher`) as it stands, on the
    /// distroless base of [`ImageSpec::distroless_cc`]; its build stage (the Rust toolchain
    /// image) replaced by the binaries this machine built, without their debug information.
    pub fn kev(target: &str, scratch: &Path) -> ImageSpec {
        let dockerfile = std::fs::read_to_string(crate::repo().join("Dockerfile")).unwrap();
        let runtime = dockerfile
            .find("\nFROM gcr.io/distroless/cc-debian12:nonroot AS runtime")
            .expect("the Dockerfile's runtime stage is FROM gcr.io/distroless/cc-debian12:nonroot");
        let mut files = Vec::new();
        let binaries = scratch.join("binaries");
        std::fs::create_dir_all(&binaries).unwrap();
        for b in ["kev-producer", "kev-enricher"] {
            let stripped = binaries.join(b);
            if !stripped.exists() {
                let out = std::process::Command::new("strip")
                    .arg("--strip-debug")
                    .arg("-o")
                    .arg(&stripped)
                    .arg(crate::procs::binary(b))
                    .output()
                    .unwrap();
                assert!(out.status.success(), "strip {b}: {}", String::from_utf8_lossy(&out.stderr));
            }
            files.push((b.to_string(), stripped));
        }
        files.push(("tests/data/k8s-events".into(), crate::repo().join("tests/data/k8s-events")));
        ImageSpec {
            reference: format!("kev.local/kev-{target}:{}", env!("CARGO_PKG_VERSION")),
            containerfile: format!(
                "FROM scratch AS build\nCOPY kev-producer kev-enricher /out/\n{}",
                &dockerfile[runtime..]
            ),
            target: Some(target.into()),
            files,
            bases: vec![ImageSpec::distroless_cc(scratch)],
        }
    }

    /// The sandbox ("pause") image of every pod: a process that sleeps until containerd
    /// SIGKILLs it (as PID 1 it ignores SIGTERM, which containerd does not wait on).
    pub fn pause() -> ImageSpec {
        ImageSpec::busybox(&format!("kev.local/pause:{BUSYBOX_TAG}"), &["/bin/busybox", "sleep", "2147483647"])
    }

    /// A hash of the reference, the Containerfile, the target, every file's path, mode and
    /// bytes (every link's target), and the bases' hashes.
    fn key(&self) -> u64 {
        let mut h = std::hash::DefaultHasher::new();
        self.reference.hash(&mut h);
        self.containerfile.hash(&mut h);
        self.target.hash(&mut h);
        for (name, path) in &self.files {
            name.hash(&mut h);
            hash_tree(path, &mut h);
        }
        for base in &self.bases {
            base.key().hash(&mut h);
        }
        h.finish()
    }

    /// The OCI archive of this image, built now unless the cache has it.
    pub fn archive(&self, sandbox: &Sandbox) -> PathBuf {
        let name: String =
            self.reference.chars().map(|c| if c.is_ascii_alphanumeric() || c == '.' { c } else { '-' }).collect();
        // Hashing reads every input (the kev binaries are tens of MB): once per call.
        let key = self.key();
        let archive = crate::cached("KEV_IMAGE_CACHE", "images").join(format!("{name}-{key:016x}.tar"));
        if !archive.is_file() {
            self.build(sandbox, &archive, key);
        }
        archive
    }

    fn build(&self, sandbox: &Sandbox, archive: &Path, key: u64) {
        let work = sandbox.dir().join(format!("build-{key:016x}"));
        let context = work.join("context");
        std::fs::create_dir_all(&context).unwrap();
        std::fs::write(context.join("Containerfile"), &self.containerfile).unwrap();
        for (name, path) in &self.files {
            let to = context.join(name);
            std::fs::create_dir_all(to.parent().unwrap()).unwrap();
            let out = std::process::Command::new("cp").arg("-a").arg(path).arg(&to).output().unwrap();
            assert!(out.status.success(), "copying {}: {}", path.display(), String::from_utf8_lossy(&out.stderr));
        }
        std::fs::create_dir_all(archive.parent().unwrap()).unwrap();
        let partial = archive.with_extension("partial");
        let _ = std::fs::remove_file(&partial);
        let buildah = format!("buildah --root {w}/root --runroot {w}/runroot --storage-driver vfs", w = work.display());
        let r = &self.reference;
        // buildah's network configuration (its CNI lock) goes under the build's directory,
        // not /etc/cni, for every buildah command (a flag covers `build` only).
        std::fs::write(
            work.join("containers.conf"),
            format!("[network]\nnetwork_backend = \"cni\"\nnetwork_config_dir = \"{}/cni\"\n", work.display()),
        )
        .unwrap();
        let mut script =
            format!("set -e\nexport BUILDAH_ISOLATION=chroot CONTAINERS_CONF={}/containers.conf\n", work.display());
        for base in &self.bases {
            let archive = base.archive(sandbox);
            script += &format!(
                "id=$({buildah} pull --quiet oci-archive:{a})\n{buildah} tag \"$id\" {b}\n",
                a = archive.display(),
                b = base.reference
            );
        }
        let target = self.target.as_ref().map(|t| format!("--target {t}")).unwrap_or_default();
        script += &format!(
            "{buildah} build --quiet --pull=never --network none {target} -f {c}/Containerfile -t {r} {c}\n\
             {buildah} push --quiet {r} oci-archive:{p}:{r}\n",
            c = context.display(),
            p = partial.display(),
        );
        sandbox.sh(&script);
        std::fs::rename(&partial, archive).unwrap();
        // vfs keeps a full copy per layer; the archive is what is kept.
        let _ = std::fs::remove_dir_all(&work);
    }
}

/// Hashes the file, link or directory tree at `path`: paths, modes, contents, link targets.
fn hash_tree(path: &Path, h: &mut impl Hasher) {
    use std::os::unix::fs::PermissionsExt;
    let meta = std::fs::symlink_metadata(path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
    meta.permissions().mode().hash(h);
    if meta.file_type().is_symlink() {
        std::fs::read_link(path).unwrap().hash(h);
    } else if meta.is_dir() {
        let mut entries: Vec<PathBuf> = std::fs::read_dir(path).unwrap().map(|e| e.unwrap().path()).collect();
        entries.sort();
        for e in entries {
            e.file_name().hash(h);
            hash_tree(&e, h);
        }
    } else {
        std::fs::read(path).unwrap().hash(h);
    }
}

/// Lays out the files of the machine's installed `packages` under `rootfs`, as `dpkg` installed
/// them (merged /usr, as Debian 12 is), less their documentation but for the copyright files,
/// plus the CA bundle `ca-certificates` generates and distroless's users and groups.
fn debian_rootfs(rootfs: &Path, packages: &[&str]) {
    use std::os::unix::fs::{symlink, PermissionsExt};
    for (link, to) in [("bin", "usr/bin"), ("sbin", "usr/sbin"), ("lib", "usr/lib"), ("lib64", "usr/lib64")] {
        std::fs::create_dir_all(rootfs.join(to)).unwrap();
        symlink(to, rootfs.join(link)).unwrap();
    }
    for p in packages {
        let out = std::process::Command::new("dpkg").args(["-L", p]).output().unwrap();
        assert!(out.status.success(), "{p} is not installed: {}", String::from_utf8_lossy(&out.stderr));
        for file in String::from_utf8_lossy(&out.stdout).lines() {
            let docs = file.starts_with("/usr/share/doc/") || file.starts_with("/usr/share/man/");
            if (docs && !file.ends_with("/copyright")) || file.starts_with("/usr/share/lintian/") {
                continue;
            }
            copy_entry(Path::new(file), rootfs);
        }
    }
    copy_entry(Path::new("/etc/ssl/certs/ca-certificates.crt"), rootfs);
    let etc = rootfs.join("etc");
    std::fs::write(
        etc.join("passwd"),
        "root:x:0:0:root:/root:/sbin/nologin\nnobody:x:65534:65534:nobody:/nonexistent:/sbin/nologin\n\
         nonroot:x:65532:65532:nonroot:/home/nonroot:/sbin/nologin\n",
    )
    .unwrap();
    std::fs::write(etc.join("group"), "root:x:0:\nnobody:x:65534:\nnonroot:x:65532:\n").unwrap();
    let tmp = rootfs.join("tmp");
    std::fs::create_dir_all(&tmp).unwrap();
    std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o1777)).unwrap();
}

/// Copies one path of a package into `rootfs`: a directory is made, a link is copied as a link,
/// a file with its mode. Paths through `/lib` and the like land in `usr/` by the links.
fn copy_entry(file: &Path, rootfs: &Path) {
    let to = rootfs.join(file.strip_prefix("/").unwrap());
    let Ok(meta) = std::fs::symlink_metadata(file) else { return };
    if meta.is_dir() {
        std::fs::create_dir_all(&to).unwrap();
    } else {
        std::fs::create_dir_all(to.parent().unwrap()).unwrap();
        if meta.file_type().is_symlink() {
            let _ = std::fs::remove_file(&to);
            std::os::unix::fs::symlink(std::fs::read_link(file).unwrap(), &to).unwrap();
        } else {
            std::fs::copy(file, &to).unwrap_or_else(|e| panic!("copying {}: {e}", file.display()));
        }
    }
}
