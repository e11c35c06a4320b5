// SPDX-License-Identifier: GPL-2.0-only
/*
 * rcfs-ns: make tasks with new namespaces, N times, and report the result.
 *
 * The rcfs patch changes how an nsproxy is made and freed when a task
 * clones or unshares its namespaces; busybox has no unshare applet here.
 *
 *   rcfs-ns clone FLAGS N     N times: clone(2) with FLAGS|SIGCHLD, the child
 *                             exits at once; wait for it
 *   rcfs-ns unshare FLAGS N   N times: fork a child that calls unshare(FLAGS)
 *                             and exits; wait for it
 *
 * FLAGS: a comma-separated list of ns, uts, ipc (CLONE_NEWNS, CLONE_NEWUTS,
 * CLONE_NEWIPC).
 *
 * Output, one line: "clone: OK N" (N done) or "clone: ENAME" (the first
 * failure; the line before it says at which repetition).  Exit status 0
 * when all succeeded, 1 when one failed, 2 on bad usage.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#ifndef CLONE_NEWUTS
#define CLONE_NEWUTS 0x04000000
#endif
#ifndef CLONE_NEWIPC
#define CLONE_NEWIPC 0x08000000
#endif

static const struct {
	int num;
	const char *name;
} errnames[] = {
	{ EPERM, "EPERM" }, { ENOMEM, "ENOMEM" }, { EINVAL, "EINVAL" },
	{ EAGAIN, "EAGAIN" }, { ENOSYS, "ENOSYS" }, { ECHILD, "ECHILD" },
	{ EINTR, "EINTR" },
};

static void report_errno(const char *op, int err)
{
	size_t i;

	for (i = 0; i < sizeof(errnames) / sizeof(errnames[0]); i++)
		if (errnames[i].num == err) {
			printf("%s: %s\n", op, errnames[i].name);
			return;
		}
	printf("%s: ERRNO_%d\n", op, err);
}

static int usage(void)
{
	fprintf(stderr, "usage: rcfs-ns clone|unshare ns,uts,ipc N\n");
	return 2;
}

static int parse_flags(char *text, unsigned long *flags)
{
	char *word;

	*flags = 0;
	for (word = strtok(text, ","); word; word = strtok(NULL, ",")) {
		if (!strcmp(word, "ns"))
			*flags |= CLONE_NEWNS;
		else if (!strcmp(word, "uts"))
			*flags |= CLONE_NEWUTS;
		else if (!strcmp(word, "ipc"))
			*flags |= CLONE_NEWIPC;
		else
			return -1;
	}
	return *flags ? 0 : -1;
}

/* One child with new namespaces; 0, or the errno of the step that failed. */
static int once(int use_clone, unsigned long flags)
{
	int status;
	long pid;

	if (use_clone)
		/* raw clone without CLONE_VM and without a new stack: like fork() */
		pid = syscall(SYS_clone, flags | SIGCHLD, 0, 0, 0, 0);
	else
		pid = fork();
	if (pid < 0)
		return errno;
	if (pid == 0)
		_exit(use_clone || unshare((int)flags) == 0 ? 0 : errno);
	if (waitpid((pid_t)pid, &status, 0) < 0)
		return errno;
	if (!WIFEXITED(status))
		return EINTR;
	return WEXITSTATUS(status);
}

int main(int argc, char **argv)
{
	unsigned long flags;
	char *end;
	long n, i;
	int use_clone, err;

	if (argc != 4)
		return usage();
	if (!strcmp(argv[1], "clone"))
		use_clone = 1;
	else if (!strcmp(argv[1], "unshare"))
		use_clone = 0;
	else
		return usage();
	if (parse_flags(argv[2], &flags))
		return usage();
	errno = 0;
	n = strtol(argv[3], &end, 10);
	if (errno || *end || end == argv[3] || n < 1)
		return usage();
	setvbuf(stdout, NULL, _IONBF, 0);
	for (i = 0; i < n; i++) {
		err = once(use_clone, flags);
		if (err) {
			printf("repetition %ld of %ld failed\n", i + 1, n);
			report_errno(argv[1], err);
			return 1;
		}
	}
	printf("%s: OK %ld\n", argv[1], n);
	return 0;
}
