/* netshift's sandbox ("pause") binary: PID 1 of every pod sandbox on the local node.
 *
 * It holds the pod's namespaces open by staying alive, reaps any child that is
 * re-parented to it (zombies would otherwise pile up in a shared PID namespace),
 * and exits 0 on SIGTERM or SIGINT. Built with `gcc -static` by scripts/build-images.sh.
 */
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

static void on_stop(int sig) {
    (void)sig;
    _exit(0);
}

static void on_child(int sig) {
    int saved = errno;
    (void)sig;
    while (waitpid(-1, NULL, WNOHANG) > 0) {
    }
    errno = saved;
}

static int handle(int sig, void (*fn)(int)) {
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = fn;
    sa.sa_flags = SA_RESTART | (sig == SIGCHLD ? SA_NOCLDSTOP : 0);
    sigemptyset(&sa.sa_mask);
    return sigaction(sig, &sa, NULL);
}

int main(int argc, char **argv) {
    if (argc > 1 && strcmp(argv[1], "-v") == 0) {
        puts("netshift-pause 1.0");
        return 0;
    }
    if (getpid() != 1)
        fputs("pause: not PID 1; running anyway\n", stderr);
    if (handle(SIGTERM, on_stop) || handle(SIGINT, on_stop) || handle(SIGCHLD, on_child)) {
        perror("pause: sigaction");
        return 1;
    }
    for (;;)
        pause();
}
