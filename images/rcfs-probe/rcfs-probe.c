// SPDX-License-Identifier: GPL-2.0-only
/*
 * rcfs-probe: make one file-system system call sequence, exactly as asked,
 * and report every step on its own line.
 *
 * Shell tools get in the way of kernel tests: busybox mount rebuilds the
 * option string, and echo/cat split large writes.  rcfs-probe makes the
 * system calls itself, once each, with the exact bytes it was given:
 *
 *   rcfs-probe [OPTIONS] write PATH DATA    open, ONE write(2) of DATA, close
 *   rcfs-probe [OPTIONS] read PATH          open, read to EOF, close
 *   rcfs-probe [OPTIONS] mount SOURCE TARGET FSTYPE DATA
 *   rcfs-probe [OPTIONS] umount TARGET
 *   rcfs-probe [OPTIONS] mkdir PATH
 *   rcfs-probe [OPTIONS] rmdir PATH
 *
 * Options:
 *   -u UID    switch to UID first (setgroups(0), setgid(GID), setuid(UID))
 *   -g GID    group for -u (default: the same number as UID)
 *   -x        DATA is hex ("68690a"); with read, print the content as hex
 *   -n N      write DATA repeated N times (in the one write call)
 *   -e        write: open an existing file only (O_WRONLY; no O_CREAT/O_TRUNC)
 *   -a        write: open with O_APPEND
 *   -f FLAGS  mount: mountflags (number, e.g. 1 for MS_RDONLY);
 *             umount: umount2 flags (2 MNT_DETACH, 1 MNT_FORCE)
 *   -m MODE   mkdir: mode in octal (default 755); write: creation mode (644)
 *
 * DATA "-" for mount means a NULL data pointer; "" is an empty string.
 * By default write opens like the shell's ">": O_WRONLY|O_CREAT|O_TRUNC.
 *
 * Output, one line per step, "STEP: OK [detail]" or "STEP: ENAME":
 *   setgroups: OK / setgid: OK / setuid: OK        (only with -u)
 *   open: OK          open: EACCES
 *   write: OK 12      write: EINVAL                (12 = bytes written)
 *   read: OK 5        followed by exactly 5 content bytes (or their hex),
 *                     then a newline if the content did not end with one
 *   close: OK
 *   mount: OK         mount: ENOENT
 *   umount: OK / mkdir: OK / rmdir: OK
 * Exit status: 0 when every step succeeded, 1 when one failed, 2 on bad usage.
 * Output is unbuffered, so the lines before a step that kills the process
 * (an oops in the kernel) are never lost.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <unistd.h>

#define MAX_WRITE (64UL * 1024 * 1024)
#define MAX_READ (16UL * 1024 * 1024)

static const struct {
	int num;
	const char *name;
} errnames[] = {
	{ 1, "EPERM" },		{ 2, "ENOENT" },	{ 3, "ESRCH" },
	{ 4, "EINTR" },		{ 5, "EIO" },		{ 6, "ENXIO" },
	{ 7, "E2BIG" },		{ 8, "ENOEXEC" },	{ 9, "EBADF" },
	{ 10, "ECHILD" },	{ 11, "EAGAIN" },	{ 12, "ENOMEM" },
	{ 13, "EACCES" },	{ 14, "EFAULT" },	{ 15, "ENOTBLK" },
	{ 16, "EBUSY" },	{ 17, "EEXIST" },	{ 18, "EXDEV" },
	{ 19, "ENODEV" },	{ 20, "ENOTDIR" },	{ 21, "EISDIR" },
	{ 22, "EINVAL" },	{ 23, "ENFILE" },	{ 24, "EMFILE" },
	{ 25, "ENOTTY" },	{ 26, "ETXTBSY" },	{ 27, "EFBIG" },
	{ 28, "ENOSPC" },	{ 29, "ESPIPE" },	{ 30, "EROFS" },
	{ 31, "EMLINK" },	{ 32, "EPIPE" },	{ 33, "EDOM" },
	{ 34, "ERANGE" },	{ 35, "EDEADLK" },	{ 36, "ENAMETOOLONG" },
	{ 37, "ENOLCK" },	{ 38, "ENOSYS" },	{ 39, "ENOTEMPTY" },
	{ 40, "ELOOP" },	{ 61, "ENODATA" },	{ 75, "EOVERFLOW" },
	{ 95, "EOPNOTSUPP" },	{ 110, "ETIMEDOUT" },	{ 116, "ESTALE" },
	{ 122, "EDQUOT" },
	/* Kernel-internal codes that must never reach user space: a patch
	 * that leaks one is buggy, so name them rather than print a number. */
	{ 512, "ERESTARTSYS" },	{ 513, "ERESTARTNOINTR" },
	{ 514, "ERESTARTNOHAND" }, { 515, "ENOIOCTLCMD" },
	{ 516, "ERESTART_RESTARTBLOCK" }, { 521, "EBADHANDLE" },
	{ 524, "ENOTSUPP" },
};

static const char *errname(int e)
{
	static char buf[32];
	size_t i;

	for (i = 0; i < sizeof(errnames) / sizeof(errnames[0]); i++)
		if (errnames[i].num == e)
			return errnames[i].name;
	snprintf(buf, sizeof(buf), "ERRNO_%d", e);
	return buf;
}

static int failed;

/*
 * Report one step: ok != 0 prints "STEP: OK[ detail]", else "STEP: ENAME"
 * for the errno the step's system call left (read before anything else).
 */
static void step(const char *name, int ok, const char *fmt, ...)
{
	int err = errno;
	char detail[64] = "";
	va_list ap;

	if (fmt) {
		va_start(ap, fmt);
		vsnprintf(detail, sizeof(detail), fmt, ap);
		va_end(ap);
	}
	if (ok) {
		dprintf(1, "%s: OK%s%s\n", name, detail[0] ? " " : "", detail);
	} else {
		dprintf(1, "%s: %s\n", name, errname(err));
		failed = 1;
	}
}

static void usage(const char *msg)
{
	if (msg)
		dprintf(2, "rcfs-probe: %s\n", msg);
	dprintf(2,
		"usage: rcfs-probe [-u UID [-g GID]] [-x] [-n N] [-e] [-a] [-f FLAGS] [-m MODE] OP ARGS\n"
		"  write PATH DATA | read PATH | mount SOURCE TARGET FSTYPE DATA\n"
		"  umount TARGET | mkdir PATH | rmdir PATH\n");
	exit(2);
}

static unsigned long number(const char *s, int base, const char *what)
{
	char *end;
	unsigned long v;

	errno = 0;
	v = strtoul(s, &end, base);
	if (errno || !*s || *end || *s == '-') {
		dprintf(2, "rcfs-probe: bad %s '%s'\n", what, s);
		exit(2);
	}
	return v;
}

static int hexval(int c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	if (c >= 'a' && c <= 'f')
		return c - 'a' + 10;
	if (c >= 'A' && c <= 'F')
		return c - 'A' + 10;
	return -1;
}

/* Decode hex DATA into a new buffer; returns its length. */
static size_t unhex(const char *s, unsigned char **out)
{
	size_t n = strlen(s), i;
	unsigned char *buf;

	if (n % 2)
		usage("hex DATA must have an even number of digits");
	buf = malloc(n / 2 + 1);
	if (!buf)
		usage("out of memory");
	for (i = 0; i < n / 2; i++) {
		int hi = hexval(s[2 * i]), lo = hexval(s[2 * i + 1]);

		if (hi < 0 || lo < 0)
			usage("hex DATA has a non-hex digit");
		buf[i] = (unsigned char)(hi << 4 | lo);
	}
	*out = buf;
	return n / 2;
}

static void put_all(const unsigned char *p, size_t n)
{
	while (n) {
		ssize_t w = write(1, p, n);

		if (w <= 0) {
			if (w < 0 && errno == EINTR)
				continue;
			exit(1);
		}
		p += w;
		n -= (size_t)w;
	}
}

static int do_write(const char *path, const char *arg, int hex, unsigned long copies,
		    int flags, mode_t mode)
{
	unsigned char *pattern, *buf;
	size_t plen, total, i;
	ssize_t w;
	int fd;

	if (hex) {
		plen = unhex(arg, &pattern);
	} else {
		pattern = (unsigned char *)strdup(arg);
		plen = strlen(arg);
	}
	if (copies == 0 || (plen && copies > MAX_WRITE / plen))
		usage("-n out of range (at most 64 MiB in total)");
	total = plen * copies;
	buf = malloc(total + 1);
	if (!buf)
		usage("out of memory");
	for (i = 0; i < copies; i++)
		memcpy(buf + i * plen, pattern, plen);

	fd = open(path, flags, mode);
	step("open", fd >= 0, NULL);
	if (fd < 0)
		return 1;
	w = write(fd, buf, total);
	step("write", w >= 0, "%ld", (long)w);
	step("close", close(fd) == 0, NULL);
	return failed;
}

static int do_read(const char *path, int hex)
{
	size_t cap = 65536, len = 0, i;
	unsigned char *buf = malloc(cap);
	int fd, err = 0;
	ssize_t r;

	if (!buf)
		usage("out of memory");
	fd = open(path, O_RDONLY);
	step("open", fd >= 0, NULL);
	if (fd < 0)
		return 1;
	for (;;) {
		if (len == cap) {
			if (cap >= MAX_READ)
				break;
			cap *= 2;
			buf = realloc(buf, cap);
			if (!buf)
				usage("out of memory");
		}
		r = read(fd, buf + len, cap - len);
		if (r < 0 && errno == EINTR)
			continue;
		if (r < 0) {
			err = errno;
			break;
		}
		if (r == 0)
			break;
		len += (size_t)r;
	}
	if (err && len == 0) {
		errno = err;
		step("read", 0, NULL);
	} else {
		if (err) /* data came, then an error: report both */
			dprintf(1, "read-error: %s\n", errname(err));
		step("read", 1, "%lu", (unsigned long)len);
		if (hex) {
			for (i = 0; i < len; i++)
				dprintf(1, "%02x", buf[i]);
			put_all((const unsigned char *)"\n", 1);
		} else {
			put_all(buf, len);
			if (len && buf[len - 1] != '\n')
				put_all((const unsigned char *)"\n", 1);
		}
		if (err)
			failed = 1;
	}
	step("close", close(fd) == 0, NULL);
	return failed;
}

int main(int argc, char **argv)
{
	long uid = -1, gid = -1;
	unsigned long copies = 1, mflags = 0;
	int hex = 0, existing = 0, append = 0, opt, flags;
	mode_t mode = 0;
	int have_mode = 0;
	const char *op;

	while ((opt = getopt(argc, argv, "+u:g:xn:eaf:m:h")) != -1) {
		switch (opt) {
		case 'u': uid = (long)number(optarg, 10, "uid"); break;
		case 'g': gid = (long)number(optarg, 10, "gid"); break;
		case 'x': hex = 1; break;
		case 'n': copies = number(optarg, 10, "count"); break;
		case 'e': existing = 1; break;
		case 'a': append = 1; break;
		case 'f': mflags = number(optarg, 0, "flags"); break;
		case 'm': mode = (mode_t)number(optarg, 8, "mode"); have_mode = 1; break;
		case 'h': usage(NULL); break;
		default: usage(NULL);
		}
	}
	if (optind >= argc)
		usage("no operation given");
	op = argv[optind++];
	argc -= optind;
	argv += optind;

	if (uid >= 0) {
		if (gid < 0)
			gid = uid;
		step("setgroups", setgroups(0, NULL) == 0, NULL);
		if (failed)
			return 1;
		step("setgid", setgid((gid_t)gid) == 0, NULL);
		if (failed)
			return 1;
		step("setuid", setuid((uid_t)uid) == 0, NULL);
		if (failed)
			return 1;
	}

	if (!strcmp(op, "write")) {
		if (argc != 2)
			usage("write takes PATH DATA");
		flags = O_WRONLY | (existing ? 0 : O_CREAT | O_TRUNC) | (append ? O_APPEND : 0);
		return do_write(argv[0], argv[1], hex, copies, flags, have_mode ? mode : 0644);
	}
	if (!strcmp(op, "read")) {
		if (argc != 1)
			usage("read takes PATH");
		return do_read(argv[0], hex);
	}
	if (!strcmp(op, "mount")) {
		const char *data;

		if (argc != 4)
			usage("mount takes SOURCE TARGET FSTYPE DATA");
		data = strcmp(argv[3], "-") ? argv[3] : NULL;
		step("mount", mount(argv[0], argv[1], argv[2], mflags, data) == 0, NULL);
		return failed;
	}
	if (!strcmp(op, "umount")) {
		if (argc != 1)
			usage("umount takes TARGET");
		step("umount", umount2(argv[0], (int)mflags) == 0, NULL);
		return failed;
	}
	if (!strcmp(op, "mkdir")) {
		if (argc != 1)
			usage("mkdir takes PATH");
		step("mkdir", mkdir(argv[0], have_mode ? mode : 0755) == 0, NULL);
		return failed;
	}
	if (!strcmp(op, "rmdir")) {
		if (argc != 1)
			usage("rmdir takes PATH");
		step("rmdir", rmdir(argv[0]) == 0, NULL);
		return failed;
	}
	usage("unknown operation");
	return 2;
}
