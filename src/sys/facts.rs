//! What Linux tells about the machine in text files: the file system a
//! file is mounted from (`/proc/self/mountinfo`), the memory cgroup's limit
//! (`/proc/self/cgroup` and the cgroup files, v1 and v2), and the shmem
//! huge-page setting. Read with `std::fs` only, so the same code builds
//! everywhere and finds nothing where the files do not exist; the parsers
//! are apart from the reads, for the tests.

use std::path::{Path, PathBuf};

/// The setting of `/sys/kernel/mm/transparent_hugepage/shmem_enabled`
/// (`always`, `within_size`, `advise`, `never`, `deny`, `force`).
pub(crate) fn shmem_mode() -> Option<String> {
    let text = std::fs::read_to_string("/sys/kernel/mm/transparent_hugepage/shmem_enabled").ok()?;
    bracketed(&text).map(str::to_string)
}

fn bracketed(text: &str) -> Option<&str> {
    let start = text.find('[')? + 1;
    let end = start + text[start..].find(']')?;
    Some(&text[start..end])
}

/// A mounted file system, as `/proc/self/mountinfo` lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Mount {
    /// Its type (`ext4`, `tmpfs`, `fuse.sshfs`).
    pub fstype: String,
    /// Where it is mounted.
    pub point: PathBuf,
    /// The file system's own options (`data=journal`, `huge=never`).
    pub super_options: String,
}

impl Mount {
    /// The value of the file system option `name` (`huge` of `huge=always`).
    pub(crate) fn option(&self, name: &str) -> Option<&str> {
        self.super_options
            .split(',')
            .find_map(|o| o.strip_prefix(name)?.strip_prefix('='))
    }
}

/// The mount of the file system with device number `dev` (`st_dev`): the
/// last one listed, which is the one a path resolves to.
pub(crate) fn mount_of(dev: u64) -> Option<Mount> {
    let text = std::fs::read_to_string("/proc/self/mountinfo").ok()?;
    let (major, minor) = split_dev(dev);
    mounts(&text)
        .filter(|m| m.dev == (major, minor))
        .last()
        .map(|m| m.mount)
}

/// glibc's `major()` and `minor()`.
fn split_dev(dev: u64) -> (u64, u64) {
    let major = ((dev >> 8) & 0xfff) | ((dev >> 32) & 0xffff_f000);
    let minor = (dev & 0xff) | ((dev >> 12) & 0xffff_ff00);
    (major, minor)
}

struct Listed {
    dev: (u64, u64),
    root: String,
    mount: Mount,
}

/// The lines of a mountinfo text: `id parent major:minor root point
/// options [optional...] - fstype source super_options`.
fn mounts(text: &str) -> impl Iterator<Item = Listed> + '_ {
    text.lines().filter_map(|line| {
        let (left, right) = line.split_once(" - ")?;
        let l: Vec<&str> = left.split(' ').collect();
        let r: Vec<&str> = right.split(' ').collect();
        let (major, minor) = l.get(2)?.split_once(':')?;
        Some(Listed {
            dev: (major.parse().ok()?, minor.parse().ok()?),
            root: unescape(l.get(3)?),
            mount: Mount {
                fstype: r.first()?.to_string(),
                point: PathBuf::from(unescape(l.get(4)?)),
                super_options: r.get(2).unwrap_or(&"").to_string(),
            },
        })
    })
}

/// mountinfo writes space, tab, newline and backslash as `\ooo`.
fn unescape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(i) = rest.find('\\') {
        out.push_str(&rest[..i]);
        let code = rest
            .get(i + 1..i + 4)
            .and_then(|o| u8::from_str_radix(o, 8).ok());
        match code {
            Some(c) => {
                out.push(char::from(c));
                rest = &rest[i + 4..];
            }
            None => {
                out.push('\\');
                rest = &rest[i + 1..];
            }
        }
    }
    out.push_str(rest);
    out
}

/// The tightest memory limit over this process's cgroup and its parents.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct MemoryHeadroom {
    /// The limit in bytes.
    pub limit: u64,
    /// What the cgroup is charged for now (page cache included).
    pub usage: u64,
    /// Of `usage`, the page cache of files (reclaimable when clean).
    pub file_cache: u64,
}

impl MemoryHeadroom {
    /// Bytes the cgroup can be charged for before it must reclaim.
    pub(crate) fn free(&self) -> u64 {
        self.limit.saturating_sub(self.usage)
    }

    /// Bytes of anonymous memory (a heap buffer) the cgroup can still hold,
    /// once it reclaims its page cache; beyond it, the OOM killer.
    pub(crate) fn room_for_anonymous(&self) -> u64 {
        self.limit
            .saturating_sub(self.usage.saturating_sub(self.file_cache))
    }
}

/// The memory limit of this process's cgroup (v2: the tightest of it and
/// its parents' `memory.max`; v1: `hierarchical_memory_limit`), or `None`
/// where there is none or it cannot be read.
pub(crate) fn memory_headroom() -> Option<MemoryHeadroom> {
    let cgroup = std::fs::read_to_string("/proc/self/cgroup").ok()?;
    let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").ok()?;
    let (dir, v2) = memory_cgroup_dir(&cgroup, &mountinfo)?;
    if v2 {
        let mut best: Option<MemoryHeadroom> = None;
        let mut at: Option<&Path> = Some(&dir);
        while let Some(d) = at {
            let max = read_trimmed(&d.join("memory.max"));
            let current = read_trimmed(&d.join("memory.current"));
            if let (Some(max), Some(current)) = (max, current) {
                if let (Ok(limit), Ok(usage)) = (max.parse::<u64>(), current.parse::<u64>()) {
                    let stat = std::fs::read_to_string(d.join("memory.stat")).unwrap_or_default();
                    let file_cache = stat_field(&stat, "file").unwrap_or(0);
                    let h = MemoryHeadroom {
                        limit,
                        usage,
                        file_cache,
                    };
                    if best.is_none_or(|b| h.free() < b.free()) {
                        best = Some(h);
                    }
                }
            } else {
                break; // above the cgroup file system's root
            }
            at = d.parent();
        }
        best
    } else {
        let stat = std::fs::read_to_string(dir.join("memory.stat")).ok()?;
        let usage = read_trimmed(&dir.join("memory.usage_in_bytes"))?
            .parse()
            .ok()?;
        v1_headroom(&stat, usage)
    }
}

fn read_trimmed(p: &Path) -> Option<String> {
    Some(std::fs::read_to_string(p).ok()?.trim().to_string())
}

/// A v1 `memory.stat`'s limit, `None` when unlimited (the kernel writes
/// the largest page-aligned `i64` for "no limit").
fn v1_headroom(stat: &str, usage: u64) -> Option<MemoryHeadroom> {
    let limit = stat_field(stat, "hierarchical_memory_limit")?;
    let file_cache = stat_field(stat, "total_cache").unwrap_or(0);
    (limit < 1 << 62).then_some(MemoryHeadroom {
        limit,
        usage,
        file_cache,
    })
}

/// The number after `name ` in a `memory.stat`.
fn stat_field(stat: &str, name: &str) -> Option<u64> {
    stat.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' '))?
        .trim()
        .parse()
        .ok()
}

/// The folder of this process's memory cgroup, and whether it is v2.
fn memory_cgroup_dir(cgroup: &str, mountinfo: &str) -> Option<(PathBuf, bool)> {
    let v1 = cgroup.lines().find_map(|l| {
        let mut f = l.splitn(3, ':');
        let (_, controllers, path) = (f.next()?, f.next()?, f.next()?);
        controllers
            .split(',')
            .any(|c| c == "memory")
            .then_some(path)
    });
    let (path, v2) = match v1 {
        Some(p) => (p, false),
        None => (cgroup.lines().find_map(|l| l.strip_prefix("0::"))?, true),
    };
    let m = mounts(mountinfo).find(|m| {
        if v2 {
            m.mount.fstype == "cgroup2"
        } else {
            m.mount.fstype == "cgroup" && m.mount.super_options.split(',').any(|o| o == "memory")
        }
    })?;
    let inside = path.strip_prefix(m.root.as_str()).unwrap_or(path);
    let dir = m.mount.point.join(inside.trim_start_matches('/'));
    Some((dir, v2))
}

#[cfg(test)]
mod tests {
    use super::*;

    const MOUNTINFO: &str = "\
24 27 0:6 / /dev rw,relatime - devtmpfs devtmpfs rw,size=123k
30 25 0:27 / /dev/shm rw,relatime - tmpfs tmpfs rw,size=246k
41 23 8:1 / /data rw,relatime - ext4 /dev/sda1 rw,data=journal
42 23 8:1 / /data\\040copy rw - ext4 /dev/sda1 rw,data=ordered
31 23 0:28 / /sys/fs/cgroup rw - tmpfs tmpfs rw,mode=755
35 31 0:32 /docker/abc /sys/fs/cgroup/memory rw shared:9 - cgroup cgroup rw,memory
36 31 0:33 / /sys/fs/cgroup/unified rw - cgroup2 cgroup2 rw
";

    #[test]
    fn a_device_finds_its_last_mount_and_its_options() {
        let m = mounts(MOUNTINFO)
            .filter(|m| m.dev == (8, 1))
            .last()
            .unwrap()
            .mount;
        assert_eq!(m.point, PathBuf::from("/data copy"));
        assert_eq!(m.option("data"), Some("ordered"));
        let shm = mounts(MOUNTINFO).find(|m| m.dev == (0, 27)).unwrap().mount;
        assert_eq!((shm.fstype.as_str(), shm.option("huge")), ("tmpfs", None));
        assert_eq!(split_dev((8 << 8) | 1), (8, 1));
        assert_eq!(split_dev(0x1000_0000_0503), (0x1005, 3));
    }

    #[test]
    fn the_memory_cgroup_is_found_under_its_mount_in_v1_and_v2() {
        let v1 = "12:memory:/docker/abc/inner\n0::/user.slice\n";
        assert_eq!(
            memory_cgroup_dir(v1, MOUNTINFO),
            Some((PathBuf::from("/sys/fs/cgroup/memory/inner"), false))
        );
        let v2 = "0::/user.slice/app\n";
        assert_eq!(
            memory_cgroup_dir(v2, MOUNTINFO),
            Some((PathBuf::from("/sys/fs/cgroup/unified/user.slice/app"), true))
        );
    }

    #[test]
    fn a_v1_limit_reads_as_headroom_and_no_limit_as_none() {
        let stat = "cache 10\nhierarchical_memory_limit 536870912\nrss 5\ntotal_cache 62914560\n";
        let h = v1_headroom(stat, 100 << 20).unwrap();
        assert_eq!(h.free(), (512 << 20) - (100 << 20));
        assert_eq!(h.room_for_anonymous(), (512 << 20) - (40 << 20));
        assert_eq!(
            v1_headroom("hierarchical_memory_limit 9223372036854771712\n", 0),
            None
        );
        assert_eq!(bracketed("always [never] deny"), Some("never"));
    }
}
