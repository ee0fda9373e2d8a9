/* N processes, each going on from sq_processes_run as a server of its own; the calling
 * process stays to supervise them (signals in, exit statuses out). Each process has its own
 * file descriptor limit, so N of them hold N times the connections one may. */
#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdlib.h>
#include <sys/wait.h>
#include <unistd.h>
#ifdef __linux__
#include <sys/prctl.h>
#endif

#include "internal.h"
#include "squall/workers.h"

/* The exit status a shell would report: the code, or 128 + the signal. */
static int status_code(int st)
{
    if (WIFEXITED(st))
        return WEXITSTATUS(st);
    if (WIFSIGNALED(st))
        return 128 + WTERMSIG(st);
    return 1;
}

static void kill_all(const pid_t *pids, unsigned n, int sig)
{
    for (unsigned i = 0; i < n; i++)
        if (pids[i] > 0)
            kill(pids[i], sig);
}

int sq_processes_run(unsigned n, unsigned *index, int *exit_code)
{
    if (n == 0 || index == NULL || exit_code == NULL)
        return UV_EINVAL;
    pid_t *pids = calloc(n, sizeof(*pids));
    if (pids == NULL)
        return UV_ENOMEM;
    /* The signals the supervisor waits for are blocked before the first fork, so none is
     * lost between a fork and the wait; each child restores the caller's mask. */
    sigset_t set, old;
    sigemptyset(&set);
    sigaddset(&set, SIGINT);
    sigaddset(&set, SIGTERM);
    sigaddset(&set, SIGHUP);
    sigaddset(&set, SIGCHLD);
    int rc = pthread_sigmask(SIG_BLOCK, &set, &old);
    if (rc != 0) {
        free(pids);
        return uv_translate_sys_error(rc);
    }
    /* A SIGCHLD ignored (a disposition that survives exec) has the kernel reap the
     * children, and none would be waited for: the default while supervising (test:
     * conn_edge/processes_run_returns_when_sigchld_was_ignored) */
    struct sigaction dfl = {.sa_handler = SIG_DFL}, old_chld;
    sigemptyset(&dfl.sa_mask);
    sigaction(SIGCHLD, &dfl, &old_chld);
    pid_t supervisor = getpid();
    unsigned started = 0;
    for (; started < n; started++) {
        pid_t pid = fork();
        if (pid == 0) {
#ifdef __linux__
            /* a supervisor killed outright (SIGKILL, the OOM killer) cannot pass SIGTERM
             * on: the kernel does, so no child keeps the port unsupervised (test:
             * conn_edge/processes_run_children_end_when_the_supervisor_is_killed) */
            prctl(PR_SET_PDEATHSIG, SIGTERM);
            if (getppid() != supervisor)
                raise(SIGTERM); /* it went before the call above */
#endif
            sigaction(SIGCHLD, &old_chld, NULL);
            pthread_sigmask(SIG_SETMASK, &old, NULL);
            free(pids);
            *index = started;
            return 0;
        }
        if (pid < 0) {
            rc = uv_translate_sys_error(errno);
            break;
        }
        pids[started] = pid;
    }
    if (rc != 0) /* a fork failed: the ones started stop, and their statuses are waited */
        kill_all(pids, started, SIGTERM);
    /* Supervise: SIGINT and SIGTERM go to every child, and SIGHUP (a log rotated: the
     * access log's reopen_on_sighup), which must not end the supervisor as it would by
     * default (test: access_log/hello_with_processes_reopens_on_sighup_to_its_supervisor);
     * the first child to fail (a bind
     * error, a crash) stops the others, so that a half-started service does not stay up.
     * Returns once all have exited. */
    unsigned left = started;
    bool stopping = rc != 0;
    int code = 0;
    while (left > 0) {
        int sig = 0;
        if (sigwait(&set, &sig) != 0)
            continue;
        if (sig == SIGINT || sig == SIGTERM) {
            stopping = true;
            kill_all(pids, started, sig);
            continue;
        }
        if (sig == SIGHUP) {
            kill_all(pids, started, sig);
            continue;
        }
        int st;
        pid_t pid;
        while ((pid = waitpid(-1, &st, WNOHANG)) != 0) {
            if (pid < 0) {
                if (errno == EINTR)
                    continue;
                left = 0; /* ECHILD: none is left to wait for */
                break;
            }
            for (unsigned i = 0; i < started; i++)
                if (pids[i] == pid) {
                    pids[i] = 0;
                    left--;
                    int c = status_code(st);
                    if (c != 0 && code == 0)
                        code = c;
                    if (c != 0 && !stopping) {
                        stopping = true;
                        kill_all(pids, started, SIGTERM);
                    }
                }
        }
    }
    sigaction(SIGCHLD, &old_chld, NULL);
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    free(pids);
    *exit_code = code;
    return rc != 0 ? rc : 1;
}
