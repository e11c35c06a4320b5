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
 *   rcfs-probe [OPTIONS] clone FLAGS        clone(2) with FLAGS|CLONE_VFORK|SIGCHLD (no
 *                                           CLONE_VM); the child exits at once
 *   rcfs-probe [OPTIONS] unshare FLAGS      unshare(2) FLAGS
 *   rcfs-probe cleanup [TOP...]             see do_cleanup()
 *
 * FLAGS: "none" or a comma-separated list of ns, uts, ipc (CLONE_NEWNS,
 * CLONE_NEWUTS, CLONE_NEWIPC).
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
 *   -t MS     give up after MS milliseconds: print "OP: TIMEOUT" and exit 3,
 *             leaving the operation blocked in a child (a hung umount)
 *   -F N@ADDR fail the Nth slab allocation that failslab counts for this
 *             process during the operation's one key system call (see
 *             fault_arm() below); ADDR is the kernel address (hex) of
 *             failslab's struct fault_attr.  Prints "fault: OK N INJECTED
 *             ALLOCS": INJECTED 1 if a failure was injected, ALLOCS the
 *             allocations counted during the call.
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
 *   umount: OK / mkdir: OK / rmdir: OK / unshare: OK
 *   clone: OK PID     then   wait: OK STATUS   (the child's exit status)
 *   fault: OK 3 1 40  (with -F)                fault: ENOENT (setup failed)
 * Exit status: 0 when every step succeeded, 1 when one failed, 2 on bad usage,
 * 3 when -t ran out.
 * Output is unbuffered, so the lines before a step that kills the process
 * (an oops in the kernel) are never lost.
 */
#define _GNU_SOURCE
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sched.h>
#include <stdint.h>
#include <sys/mount.h>
#include <sys/syscall.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <time.h>
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
		"usage: rcfs-probe [-u UID [-g GID]] [-x] [-n N] [-e] [-a] [-f FLAGS] [-m MODE] [-t MS]\n"
		"                  [-F N@ADDR] OP ARGS\n"
		"  write PATH DATA | read PATH | mount SOURCE TARGET FSTYPE DATA\n"
		"  umount TARGET | mkdir PATH | rmdir PATH | clone FLAGS | unshare FLAGS\n"
		"  cleanup [TOP...]\n");
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

/* ---- -F: fail the Nth slab allocation (failslab) -------------------------
 *
 * How 2.6.20's failslab decides (lib/fault-inject.c, should_fail()), for
 * each slab allocation (the test harness sets ignore-gfp-wait to 0, so
 * that allocations that may sleep count too, and task-filter, probability
 * 100 and the stack-trace range require-start..require-end once per test;
 * this program sets a large interval):
 *   1. task-filter: only tasks whose /proc/PID/make-it-fail is 1;
 *   2. times == 0: no failure, and nothing is counted;
 *   3. count++; unless count % interval == 0: no failure;
 *   4. probability, then the stack-trace filter: a return address of the
 *      call chain (frame pointers, 32 deep) must lie in the range;
 *   5. fail, and times--.
 * The counter is not in debugfs and never reset, so this program sets it
 * through /dev/kmem to INTERVAL - N just before the call: the Nth
 * allocation the call makes brings it to INTERVAL, a multiple of the
 * interval, and fails if it was made from within the range.  times = 1
 * arms it (one failure at most), times = 0 disarms it; between the two
 * only the call itself runs (output is printed after disarming).  Reading
 * back goes through /dev/kmem too (no allocation; debugfs attribute files
 * cannot be read twice through one descriptor, and opening one allocates).
 * The offsets are those of 2.6.20's struct fault_attr on i386 (4-byte
 * words: probability, interval, times, space, verbose, task_filter,
 * stacktrace_depth, require_start, require_end, reject_start, reject_end,
 * count); the harness checks them against debugfs before using -F.
 */
#define FAILSLAB "/sys/kernel/debug/failslab/"
#define FAULT_INTERVAL 0x40000000UL
#define FAULT_ATTR_TIMES 8
#define FAULT_ATTR_COUNT 44

static struct {
	unsigned long nth;	/* 0: no fault injection */
	unsigned long addr;	/* kernel address of failslab's struct fault_attr */
	int times, kmem, self;	/* failslab/times (written only), /dev/kmem, make-it-fail */
	uint32_t start;		/* the counter's value when armed */
	int injected;
	unsigned long allocs;
} fault = { .times = -1, .kmem = -1, .self = -1 };

static void fault_setup_failed(const char *what)
{
	dprintf(2, "rcfs-probe: -F: %s\n", what);
	step("fault", 0, NULL);
	exit(1);
}

static void put_text(int fd, const char *text, const char *what)
{
	if (write(fd, text, strlen(text)) != (ssize_t)strlen(text))
		fault_setup_failed(what);
}

/* Open what arming needs and set the interval (nothing is counted yet). */
static void fault_open(void)
{
	char text[32];
	int fd;

	if (!fault.nth)
		return;
	fd = open(FAILSLAB "interval", O_WRONLY);
	if (fd < 0)
		fault_setup_failed(FAILSLAB "interval");
	snprintf(text, sizeof(text), "%lu\n", FAULT_INTERVAL);
	put_text(fd, text, "write " FAILSLAB "interval");
	close(fd);
	fault.times = open(FAILSLAB "times", O_WRONLY);
	if (fault.times < 0)
		fault_setup_failed(FAILSLAB "times");
	fault.kmem = open("/dev/kmem", O_RDWR);
	if (fault.kmem < 0)
		fault_setup_failed("/dev/kmem");
	fault.self = open("/proc/self/make-it-fail", O_WRONLY);
	if (fault.self < 0)
		fault_setup_failed("/proc/self/make-it-fail");
}

static void fault_arm(void)
{
	if (!fault.nth)
		return;
	fault.start = (uint32_t)(FAULT_INTERVAL - fault.nth);
	put_text(fault.self, "1", "write /proc/self/make-it-fail");
	if (pwrite(fault.kmem, &fault.start, sizeof(fault.start),
		   (off_t)(fault.addr + FAULT_ATTR_COUNT)) !=
	    (ssize_t)sizeof(fault.start))
		fault_setup_failed("write the counter through /dev/kmem");
	put_text(fault.times, "1", "write " FAILSLAB "times");
}

/* Disarm, and find out what happened; keeps errno (the call's). */
static void fault_disarm(void)
{
	int err = errno;
	int32_t times;
	uint32_t now;
	ssize_t n, m;

	if (!fault.nth)
		return;
	n = pread(fault.kmem, &times, sizeof(times), (off_t)(fault.addr + FAULT_ATTR_TIMES));
	m = pread(fault.kmem, &now, sizeof(now), (off_t)(fault.addr + FAULT_ATTR_COUNT));
	put_text(fault.times, "0", "write " FAILSLAB "times");
	put_text(fault.self, "0", "write /proc/self/make-it-fail");
	if (n != (ssize_t)sizeof(times) || m != (ssize_t)sizeof(now))
		fault_setup_failed("read failslab's times and counter through /dev/kmem");
	fault.injected = times == 0;
	fault.allocs = (unsigned long)(uint32_t)(now - fault.start);
	dprintf(1, "fault: OK %lu %d %lu\n", fault.nth, fault.injected, fault.allocs);
	errno = err;
}

/* -F N@ADDR */
static void fault_option(const char *arg)
{
	const char *at = strchr(arg, '@');
	char nth[32];

	if (!at || at == arg || (size_t)(at - arg) >= sizeof(nth))
		usage("-F takes N@ADDR");
	memcpy(nth, arg, (size_t)(at - arg));
	nth[at - arg] = 0;
	fault.nth = number(nth, 10, "-F allocation number");
	fault.addr = number(at + 1, 16, "-F address");
	if (!fault.nth || fault.nth >= FAULT_INTERVAL || !fault.addr)
		usage("-F: N must be 1 or more, ADDR not 0");
}

#ifndef CLONE_NEWUTS
#define CLONE_NEWUTS 0x04000000
#endif
#ifndef CLONE_NEWIPC
#define CLONE_NEWIPC 0x08000000
#endif

/* "none" or a comma-separated list of ns, uts, ipc */
static unsigned long ns_flags(const char *text)
{
	unsigned long flags = 0;
	const char *p = text;
	size_t n;

	if (!strcmp(text, "none"))
		return 0;
	while (*p) {
		n = strcspn(p, ",");
		if (n == 2 && !strncmp(p, "ns", 2))
			flags |= CLONE_NEWNS;
		else if (n == 3 && !strncmp(p, "uts", 3))
			flags |= CLONE_NEWUTS;
		else if (n == 3 && !strncmp(p, "ipc", 3))
			flags |= CLONE_NEWIPC;
		else
			usage("FLAGS: none, or ns, uts, ipc separated by commas");
		p += n;
		if (*p == ',' && *++p == 0)
			usage("FLAGS: none, or ns, uts, ipc separated by commas");
	}
	return flags;
}

/*
 * clone(2) like fork (no CLONE_VM: the child runs on a copy of this stack)
 * with CLONE_VFORK, so this process sleeps until the child has exited and
 * the child's allocations, if any, are counted before disarming; then wait.
 */
static int do_clone(unsigned long flags)
{
	int status = 0;
	long pid;

	fault_arm();
	pid = syscall(SYS_clone, flags | CLONE_VFORK | SIGCHLD, 0, 0, 0, 0);
	if (pid == 0)
		syscall(SYS_exit, 0);
	fault_disarm();
	step("clone", pid > 0, "%ld", pid);
	if (pid <= 0)
		return failed;
	step("wait", waitpid((pid_t)pid, &status, 0) == pid, "%d",
	     WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status));
	return failed;
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
	fault_arm();
	w = write(fd, buf, total);
	fault_disarm();
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
	fault_arm();
	fd = open(path, O_RDONLY);
	fault_disarm();
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

/* ---- -t: a deadline for an operation that may block forever ------------- */

static long now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec * 1000L + ts.tv_nsec / 1000000L;
}

/*
 * Fork: the child returns and does the operation with its output going
 * through a pipe; the parent relays that output until the child has exited,
 * or prints "OP: TIMEOUT" after ms milliseconds and exits 3.  The parent
 * never shares its stdout with the child, so a child stuck in the kernel
 * does not keep the caller (an SSH channel) waiting for end of file.
 */
static void run_with_deadline(const char *op, long ms)
{
	int fds[2], status;
	long deadline = now_ms() + ms, left;
	struct pollfd pfd;
	char buf[4096];
	ssize_t n;
	pid_t pid;

	if (pipe(fds)) {
		dprintf(2, "rcfs-probe: pipe: %s\n", errname(errno));
		exit(2);
	}
	pid = fork();
	if (pid < 0) {
		dprintf(2, "rcfs-probe: fork: %s\n", errname(errno));
		exit(2);
	}
	if (pid == 0) {
		close(fds[0]);
		dup2(fds[1], 1);
		dup2(fds[1], 2);
		close(fds[1]);
		return;
	}
	close(fds[1]);
	pfd.fd = fds[0];
	pfd.events = POLLIN;
	for (;;) {
		left = deadline - now_ms();
		if (left <= 0 || poll(&pfd, 1, (int)left) == 0) {
			dprintf(1, "%s: TIMEOUT\n", op);
			exit(3);
		}
		n = read(fds[0], buf, sizeof(buf));
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			break;
		put_all((const unsigned char *)buf, (size_t)n);
	}
	if (waitpid(pid, &status, 0) < 0)
		exit(2);
	exit(WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status));
}

/* ---- cleanup ------------------------------------------------------------ */

#define CHECK_MOUNT "/tmp/.rcfs-cleanup-check"

struct container {
	int depth;
	char *path;
};

static struct container *containers;
static size_t ncontainers, maxcontainers;

static void problem(const char *what, const char *path, int err)
{
	dprintf(1, "PROBLEM %s %s %s\n", what, path, errname(err));
	failed = 1;
}

static char *join(const char *dir, const char *name)
{
	size_t n = strlen(dir) + strlen(name) + 2;
	char *p = malloc(n);

	if (!p) {
		dprintf(2, "rcfs-probe: out of memory\n");
		exit(2);
	}
	snprintf(p, n, "%s/%s", dir, name);
	return p;
}

/* Every directory below dir (a container), with its depth. */
static void collect(const char *dir, int depth)
{
	DIR *d = opendir(dir);
	struct dirent *e;
	struct stat st;
	char *path;

	if (!d) {
		problem("opendir", dir, errno);
		return;
	}
	while ((e = readdir(d))) {
		if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, ".."))
			continue;
		path = join(dir, e->d_name);
		if (lstat(path, &st) || !S_ISDIR(st.st_mode)) {
			free(path);
			continue;
		}
		if (ncontainers == maxcontainers) {
			maxcontainers = maxcontainers ? 2 * maxcontainers : 64;
			containers = realloc(containers, maxcontainers * sizeof(*containers));
			if (!containers) {
				dprintf(2, "rcfs-probe: out of memory\n");
				exit(2);
			}
		}
		containers[ncontainers].depth = depth;
		containers[ncontainers++].path = path;
		collect(path, depth + 1);
	}
	closedir(d);
}

static int deepest_first(const void *a, const void *b)
{
	return ((const struct container *)b)->depth - ((const struct container *)a)->depth;
}

/* The text of a (small) file, NUL-terminated; NULL if it cannot be read. */
static char *slurp(const char *path)
{
	size_t len = 0, size = 4096;
	char *buf = malloc(size);
	ssize_t n;
	int fd = open(path, O_RDONLY);

	if (fd < 0 || !buf) {
		if (fd >= 0)
			close(fd);
		free(buf);
		return NULL;
	}
	while ((n = read(fd, buf + len, size - len - 1)) > 0) {
		len += (size_t)n;
		if (size - len < 2) {
			char *bigger = size < MAX_READ ? realloc(buf, size * 2) : NULL;

			if (!bigger)
				break;
			buf = bigger;
			size *= 2;
		}
	}
	close(fd);
	buf[len] = 0;
	return buf;
}

/* Is top an rcfs mount point (a line "SOURCE TOP rcfs ..." in /proc/mounts)? */
static int is_rcfs_mount(const char *top)
{
	char *mounts = slurp("/proc/mounts"), *line, *save = NULL;
	char dir[4096], type[64];
	int found = 0;

	if (!mounts)
		return 0;
	for (line = strtok_r(mounts, "\n", &save); line && !found; line = strtok_r(NULL, "\n", &save))
		found = sscanf(line, "%*s %4095s %63s", dir, type) == 2 && !strcmp(dir, top) &&
			!strcmp(type, "rcfs");
	free(mounts);
	return found;
}

/* Move every task of container c back to the top container (one write each). */
static void empty_container(const char *top, const char *c)
{
	char *tasks = join(c, "tasks"), *top_tasks = join(top, "tasks");
	char *pids = slurp(tasks), *pid, *save = NULL;
	char line[32];
	int fd, n;

	for (pid = pids ? strtok_r(pids, " \n", &save) : NULL; pid; pid = strtok_r(NULL, " \n", &save)) {
		fd = open(top_tasks, O_WRONLY);
		if (fd < 0)
			continue;
		n = snprintf(line, sizeof(line), "%s\n", pid);
		if (write(fd, line, (size_t)n) < 0) {
			/* a task that exited meanwhile: nothing to move */
		}
		close(fd);
	}
	free(pids);
	free(tasks);
	free(top_tasks);
}

/*
 * cleanup [TOP...]: for each rcfs mount TOP, in the order given, move the
 * tasks of every container back to the top, remove the containers deepest
 * first and unmount TOP (a TOP that is not an rcfs mount is skipped).  Then,
 * if the kernel has rcfs, check that every subsystem is free again: a mount
 * with no options (all subsystems) must succeed, and its umount too.
 * Output: one line "PROBLEM STEP PATH ENAME" per failed step, nothing else;
 * exit status 1 if there was one.  One process instead of a shell script
 * keeps a test's cleanup to one fork and exec in a slow (emulated) guest.
 */
static int do_cleanup(int argc, char **argv)
{
	char *fs;
	size_t i;
	int t;

	for (t = 0; t < argc; t++) {
		if (!is_rcfs_mount(argv[t]))
			continue;
		ncontainers = 0;
		collect(argv[t], 0);
		qsort(containers, ncontainers, sizeof(*containers), deepest_first);
		for (i = 0; i < ncontainers; i++) {
			empty_container(argv[t], containers[i].path);
			if (rmdir(containers[i].path))
				problem("rmdir", containers[i].path, errno);
			free(containers[i].path);
		}
		if (umount2(argv[t], 0))
			problem("umount", argv[t], errno);
	}
	fs = slurp("/proc/filesystems");
	if (fs && strstr(fs, "\trcfs\n")) {
		if (mkdir(CHECK_MOUNT, 0755) && errno != EEXIST)
			problem("mkdir", CHECK_MOUNT, errno);
		else if (mount("none", CHECK_MOUNT, "rcfs", 0, NULL))
			problem("mount", CHECK_MOUNT, errno);
		else if (umount2(CHECK_MOUNT, 0))
			problem("umount", CHECK_MOUNT, errno);
	}
	free(fs);
	return failed;
}

int main(int argc, char **argv)
{
	long uid = -1, gid = -1;
	unsigned long copies = 1, mflags = 0;
	int hex = 0, existing = 0, append = 0, opt, flags;
	mode_t mode = 0;
	int have_mode = 0;
	long deadline_ms = 0;
	const char *op;
	int r;

	while ((opt = getopt(argc, argv, "+u:g:xn:eaf:m:t:F:h")) != -1) {
		switch (opt) {
		case 'u': uid = (long)number(optarg, 10, "uid"); break;
		case 'g': gid = (long)number(optarg, 10, "gid"); break;
		case 'x': hex = 1; break;
		case 'n': copies = number(optarg, 10, "count"); break;
		case 'e': existing = 1; break;
		case 'a': append = 1; break;
		case 'f': mflags = number(optarg, 0, "flags"); break;
		case 'm': mode = (mode_t)number(optarg, 8, "mode"); have_mode = 1; break;
		case 't': deadline_ms = (long)number(optarg, 10, "milliseconds"); break;
		case 'F': fault_option(optarg); break;
		case 'h': usage(NULL); break;
		default: usage(NULL);
		}
	}
	if (optind >= argc)
		usage("no operation given");
	op = argv[optind++];
	argc -= optind;
	argv += optind;

	if (deadline_ms > 0)
		run_with_deadline(op, deadline_ms);
	fault_open();

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
		fault_arm();
		r = mount(argv[0], argv[1], argv[2], mflags, data);
		fault_disarm();
		step("mount", r == 0, NULL);
		return failed;
	}
	if (!strcmp(op, "umount")) {
		if (argc != 1)
			usage("umount takes TARGET");
		fault_arm();
		r = umount2(argv[0], (int)mflags);
		fault_disarm();
		step("umount", r == 0, NULL);
		return failed;
	}
	if (!strcmp(op, "mkdir")) {
		if (argc != 1)
			usage("mkdir takes PATH");
		fault_arm();
		r = mkdir(argv[0], have_mode ? mode : 0755);
		fault_disarm();
		step("mkdir", r == 0, NULL);
		return failed;
	}
	if (!strcmp(op, "rmdir")) {
		if (argc != 1)
			usage("rmdir takes PATH");
		fault_arm();
		r = rmdir(argv[0]);
		fault_disarm();
		step("rmdir", r == 0, NULL);
		return failed;
	}
	if (!strcmp(op, "clone")) {
		if (argc != 1)
			usage("clone takes FLAGS");
		return do_clone(ns_flags(argv[0]));
	}
	if (!strcmp(op, "unshare")) {
		unsigned long f;

		if (argc != 1)
			usage("unshare takes FLAGS");
		f = ns_flags(argv[0]);
		fault_arm();
		r = unshare((int)f);
		fault_disarm();
		step("unshare", r == 0, NULL);
		return failed;
	}
	if (!strcmp(op, "cleanup"))
		return do_cleanup(argc, argv);
	usage("unknown operation");
	return 2;
}
