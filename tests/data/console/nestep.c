/* Nested epoll: C watches A watches B watches a pipe; a write wakes them in a chain. */
#include <stdio.h>
#include <unistd.h>
#include <sys/epoll.h>
int main(void) {
    int p[2], a, b, c;
    struct epoll_event ev = { .events = EPOLLIN };
    if (pipe(p)) { perror("pipe"); return 1; }
    a = epoll_create(1); b = epoll_create(1); c = epoll_create(1);
    if (a < 0 || b < 0 || c < 0) { perror("epoll_create"); return 1; }
    ev.data.fd = p[0]; if (epoll_ctl(b, EPOLL_CTL_ADD, p[0], &ev)) { perror("ctl b"); return 1; }
    ev.data.fd = b; if (epoll_ctl(a, EPOLL_CTL_ADD, b, &ev)) { perror("ctl a"); return 1; }
    ev.data.fd = a; if (epoll_ctl(c, EPOLL_CTL_ADD, a, &ev)) { perror("ctl c"); return 1; }
    if (write(p[1], "x", 1) != 1) { perror("write"); return 1; }
    int n = epoll_wait(c, &ev, 1, 1000);
    printf("epoll_wait on the outer set: %d\n", n);
    return 0;
}
