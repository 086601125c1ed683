/* slowfs: a read-only FUSE file system that serves the files of one folder
 * with a fixed delay per read request, as a network volume answers: the
 * stand-in for NFS, SMB, Lustre or a cloud FUSE mount in tests/volumes.rs.
 *
 *   slowfs BACKING MOUNTPOINT DELAY_US
 *
 * runs in the foreground (multi-threaded: requests in flight are served at
 * once, as a server does) until the mount point is unmounted
 * (`fusermount3 -u MOUNTPOINT`), then prints one line:
 *
 *   slowfs reads=N bytes=B largest=L
 *
 * (read requests served, bytes they returned, the largest request).
 * Build: cc -O2 bench/slowfs.c $(pkg-config --cflags --libs fuse3) */
#define FUSE_USE_VERSION 31
#define _GNU_SOURCE

#include <fuse.h>

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

static char backing[PATH_MAX];
static long delay_us;
static unsigned long long reads, bytes, largest;

static void real_path(char *out, const char *path) {
  snprintf(out, PATH_MAX, "%s%s", backing, path);
}

static int fs_getattr(const char *path, struct stat *st, struct fuse_file_info *fi) {
  char p[PATH_MAX];
  (void)fi;
  real_path(p, path);
  if (lstat(p, st) != 0) return -errno;
  st->st_mode &= ~0222; /* read-only */
  return 0;
}

static int fs_readdir(const char *path, void *buf, fuse_fill_dir_t fill, off_t off,
                      struct fuse_file_info *fi, enum fuse_readdir_flags flags) {
  char p[PATH_MAX];
  DIR *d;
  struct dirent *e;
  (void)off;
  (void)fi;
  (void)flags;
  real_path(p, path);
  d = opendir(p);
  if (!d) return -errno;
  while ((e = readdir(d)) != NULL) fill(buf, e->d_name, NULL, 0, 0);
  closedir(d);
  return 0;
}

static int fs_open(const char *path, struct fuse_file_info *fi) {
  char p[PATH_MAX];
  int fd;
  if ((fi->flags & O_ACCMODE) != O_RDONLY) return -EROFS;
  real_path(p, path);
  fd = open(p, O_RDONLY);
  if (fd < 0) return -errno;
  fi->fh = (uint64_t)fd;
  fi->keep_cache = 1;
  return 0;
}

static int fs_read(const char *path, char *buf, size_t size, off_t off, struct fuse_file_info *fi) {
  ssize_t n;
  struct timespec t;
  (void)path;
  t.tv_sec = delay_us / 1000000;
  t.tv_nsec = (delay_us % 1000000) * 1000;
  nanosleep(&t, NULL);
  n = pread((int)fi->fh, buf, size, off);
  if (n < 0) return -errno;
  __atomic_add_fetch(&reads, 1, __ATOMIC_RELAXED);
  __atomic_add_fetch(&bytes, (unsigned long long)n, __ATOMIC_RELAXED);
  {
    unsigned long long cur = __atomic_load_n(&largest, __ATOMIC_RELAXED);
    while (size > cur &&
           !__atomic_compare_exchange_n(&largest, &cur, size, 0, __ATOMIC_RELAXED, __ATOMIC_RELAXED)) {
    }
  }
  return (int)n;
}

static int fs_release(const char *path, struct fuse_file_info *fi) {
  (void)path;
  close((int)fi->fh);
  return 0;
}

static void *fs_init(struct fuse_conn_info *conn, struct fuse_config *cfg) {
  (void)conn;
  cfg->kernel_cache = 1;
  return NULL;
}

static const struct fuse_operations ops = {
    .getattr = fs_getattr,
    .readdir = fs_readdir,
    .open = fs_open,
    .read = fs_read,
    .release = fs_release,
    .init = fs_init,
};

int main(int argc, char **argv) {
  char *args[8];
  int n = 0, rc;
  if (argc != 4 || !realpath(argv[1], backing)) {
    fprintf(stderr, "usage: slowfs BACKING MOUNTPOINT DELAY_US\n");
    return 2;
  }
  delay_us = atol(argv[3]);
  args[n++] = argv[0];
  args[n++] = argv[2];
  args[n++] = "-f";
  args[n++] = "-o";
  args[n++] = "ro,fsname=slowfs";
  args[n] = NULL;
  rc = fuse_main(n, args, &ops, NULL);
  printf("slowfs reads=%llu bytes=%llu largest=%llu\n", reads, bytes, largest);
  return rc;
}
