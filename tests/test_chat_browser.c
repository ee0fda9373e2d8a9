/* The chat page in a real browser: build/bin/chat on a free port (th_app_start), and
 * tests/browser/chat.mjs (node + playwright-core driving Debian's chromium, headless)
 * against it. The script opens two pages of one room, on WebSocket and on long polling,
 * sends from each, checks that both pages show both messages in the same id order, each
 * once, switches a page to SSE and to polling and checks again; it saves a screenshot of
 * each page. Here: its exit status (its one-line reason on a failure), that the
 * screenshots are PNG files, and that chat exits 0 on SIGTERM afterwards.
 */
#include <criterion/criterion.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "support/app.h"
#include "support/harness.h"

/* The script cuts itself off at SCRIPT_DEADLINE_MS; the test kills it (and its browser)
 * at KILL_MS. A run takes about 6 s on an idle machine. */
#define SCRIPT_DEADLINE_MS 40000
#define KILL_MS 45000

TestSuite(chat_browser, .timeout = 60);

static const char *bin_dir(void)
{
    const char *bin = getenv("SQUALL_BIN");
    return bin != NULL && *bin != '\0' ? bin : "build/bin";
}

/* ---- node, in a process group of its own ---- */

/* Forks argv (found in PATH) in a new process group, its stdout and stderr on out_fd;
 * it dies with the test process. */
static pid_t spawn_group(const char *const *argv, int out_fd)
{
    pid_t pid = fork();
    cr_assert_geq(pid, 0);
    if (pid == 0) {
        prctl(PR_SET_PDEATHSIG, SIGKILL);
        setpgid(0, 0);
        dup2(out_fd, STDOUT_FILENO);
        dup2(out_fd, STDERR_FILENO);
        int null = open("/dev/null", O_RDONLY);
        if (null >= 0)
            dup2(null, STDIN_FILENO);
        execvp(argv[0], (char *const *)argv);
        _exit(127);
    }
    return pid;
}

/* Waits up to timeout_ms for pid; returns its wait status, or -1 after killing its
 * process group (SIGKILL). */
static int wait_or_kill(pid_t pid, int timeout_ms)
{
    int status = 0;
    uint64_t end = th_now_ms() + (uint64_t)timeout_ms;
    pid_t w;
    while ((w = waitpid(pid, &status, WNOHANG)) == 0 && th_now_ms() < end)
        th_sleep_ms(10);
    if (w == pid)
        return status;
    kill(-pid, SIGKILL);
    waitpid(pid, &status, 0);
    return -1;
}

/* Reads fd into buf (NUL-terminated, cut at cap - 1 bytes) until end of file or the
 * deadline. */
static void read_all(int fd, char *buf, size_t cap, uint64_t end)
{
    size_t n = 0;
    buf[0] = '\0';
    for (;;) {
        uint64_t now = th_now_ms();
        struct pollfd p = {.fd = fd, .events = POLLIN};
        if (now >= end || poll(&p, 1, (int)(end - now)) <= 0)
            return;
        char scratch[512];
        bool room = n < cap - 1;
        ssize_t r = read(fd, room ? buf + n : scratch, room ? cap - 1 - n : sizeof(scratch));
        if (r <= 0)
            return;
        if (room) {
            n += (size_t)r;
            buf[n] = '\0';
        }
    }
}

/* ---- the screenshots ---- */

/* Where chat.mjs is told to put them: $SQUALL_ARTIFACTS, else <build>/artifacts beside
 * SQUALL_BIN's <build>/bin. */
static void artifacts_dir(char *out, size_t cap)
{
    const char *env = getenv("SQUALL_ARTIFACTS");
    int n = env != NULL && *env != '\0' ? snprintf(out, cap, "%s", env)
                                        : snprintf(out, cap, "%s/../artifacts", bin_dir());
    cr_assert(n > 0 && (size_t)n < cap);
}

static void expect_png(const char *dir, const char *name)
{
    char path[PATH_MAX + 64];
    snprintf(path, sizeof(path), "%s/%s", dir, name);
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    cr_assert_geq(fd, 0, "%s: %s", path, strerror(errno));
    unsigned char magic[8] = {0};
    ssize_t n = read(fd, magic, sizeof(magic));
    struct stat st;
    cr_assert_eq(fstat(fd, &st), 0);
    close(fd);
    cr_assert_eq(n, 8);
    cr_assert_eq(memcmp(magic, "\x89PNG\r\n\x1a\n", 8), 0, "%s is not a PNG file", path);
    cr_assert_gt(st.st_size, 1000, "%s: %lld bytes", path, (long long)st.st_size);
}

Test(chat_browser, ws_and_longpoll_pages_see_each_others_messages_then_sse_and_poll)
{
    signal(SIGPIPE, SIG_IGN);
    char dir[PATH_MAX];
    artifacts_dir(dir, sizeof(dir));
    mkdir(dir, 0755); /* the script makes it too; here so the stale files can go first */
    const char *shots[] = {"chat-ws.png", "chat-longpoll.png"};
    for (size_t i = 0; i < 2; i++) {
        char path[PATH_MAX + 64];
        snprintf(path, sizeof(path), "%s/%s", dir, shots[i]);
        unlink(path);
    }

    th_app_t chat = th_app_start_logged("chat", "--workers", "1", NULL);
    char url[64], script[PATH_MAX], deadline[16];
    snprintf(url, sizeof(url), "http://127.0.0.1:%d/", chat.port);
    snprintf(script, sizeof(script), "%s/../../tests/browser/chat.mjs", bin_dir());
    snprintf(deadline, sizeof(deadline), "%d", SCRIPT_DEADLINE_MS);
    cr_assert_eq(setenv("SQUALL_ARTIFACTS", dir, 1), 0);
    cr_assert_eq(setenv("CHAT_DEADLINE_MS", deadline, 1), 0);

    /* at the deadline node's process group goes, the browser with it */
    int out[2];
    cr_assert_eq(pipe2(out, O_CLOEXEC), 0);
    const char *argv[] = {"node", script, url, NULL};
    pid_t node = spawn_group(argv, out[1]);
    close(out[1]);
    static char log[16384];
    uint64_t end = th_now_ms() + KILL_MS;
    read_all(out[0], log, sizeof(log), end);
    close(out[0]);
    uint64_t now = th_now_ms();
    int status = wait_or_kill(node, now < end ? (int)(end - now) : 0);

    char *chat_err = th_app_stderr(&chat); /* for the messages below; not freed on failure */
    th_app_stop(&chat);
    cr_assert_neq(status, -1, "chat.mjs still ran after %d ms: killed; it said: %s", KILL_MS, log);
    cr_assert(WIFEXITED(status), "chat.mjs died of signal %d: %s", WTERMSIG(status), log);
    cr_assert_neq(WEXITSTATUS(status), 127, "node could not be run (scripts/deps.sh installs it)");
    cr_assert_eq(WEXITSTATUS(status), 0, "chat.mjs exited %d: %s\nchat's stderr: %s",
                 WEXITSTATUS(status), log, chat_err);
    cr_assert(strstr(log, "chat.mjs: ok") != NULL, "%s", log);
    for (size_t i = 0; i < 2; i++)
        expect_png(dir, shots[i]);
    free(chat_err);
}
