/* SPDX-License-Identifier: Apache-2.0 */
/*
 * tetherd: the Tether client notification agent.
 *
 * Started as root, it forks: the child (the channel process) drops to the
 * "tether" user and owns the network, the spool, the identity and the
 * control socket; the parent (the scheduler process) stays root and runs the
 * cycles. Not started as root, it runs both halves in one process.
 *
 * The root process supervises its child, as sshd does: each channel process
 * is a fresh execution of this binary (--channel-process, with the privsep
 * socket on fd 3 and the control socket on fd 4), so that every one gets a
 * new address-space layout and a remote attacker cannot learn it one crash
 * at a time. When it dies, the root process starts another after 0.1 s,
 * doubling the wait for each death within a minute of its start, up to
 * [agent] respawn_delay_max_seconds; cycles keep running meanwhile. Only a
 * configuration failure (exit status TETHER_EXIT_CONFIG) stops the service.
 */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <grp.h>
#include <pwd.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <systemd/sd-daemon.h>
#include <systemd/sd-event.h>

#include "agent/channeld.h"
#include "agent/config.h"
#include "agent/control.h"
#include "agent/dirs.h"
#include "common/fsutil.h"
#include "agent/logsink.h"
#include "agent/privsep.h"
#include "agent/schedd.h"
#include "common/cleanup.h"
#include "common/log.h"
#include "transport/sign.h"

#define MAX_OVERRIDES 16
#define USEC_PER_SEC 1000000ULL
#define CHILD_STOP_TIMEOUT_USEC (15ULL * USEC_PER_SEC)
/* The channel process's respawn backoff (the cap is configured). */
#define RESPAWN_MIN_USEC (USEC_PER_SEC / 10)
#define RESPAWN_HEALTHY_USEC (60ULL * USEC_PER_SEC)
/* Where a channel process finds its sockets after the exec. */
#define CHANNEL_PRIV_FD 3
#define CHANNEL_CONTROL_FD 4
#define CHANNEL_EXE_FD 5

struct override {
        const char *section, *key, *value;
};

static struct {
        const char *config_path;
        bool check_config;
        bool journal;
        bool foreground;
        bool single_process;
        bool debug;
        bool channel_process; /* internal: started by the root process */
        struct override overrides[MAX_OVERRIDES];
        size_t n_overrides;
} arg = {.config_path = TETHER_SYSCONFDIR_STR "/tether.conf"};

/* What the main loop of each process drives. */
static struct {
        sd_event *event;
        struct channeld *channel;
        struct schedd *sched;
        struct tether_config *sched_config;
        pid_t child;
        sd_event_source *child_source;
        sd_event_source *child_kill_timer;
        bool stopping;
        /* Supervision of the channel process (root process only). */
        int exe_fd;          /* this binary, opened at start: a package upgrade cannot swap it */
        char **channel_argv; /* our argv plus --channel-process */
        int control_fd;      /* the listening control socket, handed to each channel process */
        uint64_t child_started_usec;
        uint64_t respawn_delay_usec; /* the last wait; 0 before the first death */
        unsigned deaths;
        sd_event_source *respawn_timer;
} run = {.child = -1, .exe_fd = -1, .control_fd = -1};

static void help(void) {
        printf("Usage: tetherd [OPTIONS]\n"
               "\n"
               "The Tether client notification agent: holds a channel open to the management\n"
               "point, runs the cycles it pushes, and answers with signed responses.\n"
               "\n"
               "Options:\n"
               "  -c, --config FILE        configuration file (default %s;\n"
               "                           drop-ins from FILE.d/*.conf)\n"
               "      --check-config       check the configuration, print \"configuration OK\"\n"
               "                           or every error with file and line, and exit\n"
               "      --state-dir DIR      override [agent] state_dir\n"
               "      --runtime-dir DIR    override [agent] runtime_dir (control socket)\n"
               "      --user NAME          override [agent] user (the channel process's user)\n"
               "      --single-process     no privilege separation, even as root\n"
               "      --journal            log to journald (the default under systemd)\n"
               "  -f, --foreground         log to stderr even under systemd\n"
               "  -d, --debug              log at debug level\n"
               "  -h, --help               show this help\n"
               "      --version            show the version\n"
               "\n"
               "Signals: SIGTERM stops cleanly (tasks of a running cycle stay queued and run\n"
               "again after the restart); SIGHUP reloads the configuration.\n"
               "See tetherctl(8) for status and triggers.\n",
               TETHER_SYSCONFDIR_STR "/tether.conf");
}

static int add_override(const char *section, const char *key, const char *value) {
        if (arg.n_overrides >= MAX_OVERRIDES)
                return -E2BIG;
        arg.overrides[arg.n_overrides++] = (struct override){section, key, value};
        return 0;
}

static int parse_argv(int argc, char **argv) {
        enum {
                OPT_CHECK = 0x100,
                OPT_STATE,
                OPT_RUNTIME,
                OPT_USER,
                OPT_SINGLE,
                OPT_JOURNAL,
                OPT_VERSION,
                OPT_CHANNEL
        };
        static const struct option options[] = {
                {"config", required_argument, NULL, 'c'},
                {"check-config", no_argument, NULL, OPT_CHECK},
                {"state-dir", required_argument, NULL, OPT_STATE},
                {"runtime-dir", required_argument, NULL, OPT_RUNTIME},
                {"user", required_argument, NULL, OPT_USER},
                {"single-process", no_argument, NULL, OPT_SINGLE},
                {"journal", no_argument, NULL, OPT_JOURNAL},
                {"foreground", no_argument, NULL, 'f'},
                {"debug", no_argument, NULL, 'd'},
                {"help", no_argument, NULL, 'h'},
                {"version", no_argument, NULL, OPT_VERSION},
                {"channel-process", no_argument, NULL, OPT_CHANNEL},
                {},
        };
        int c;

        while ((c = getopt_long(argc, argv, "c:fdh", options, NULL)) >= 0) {
                switch (c) {
                case 'c':
                        arg.config_path = optarg;
                        break;
                case OPT_CHECK:
                        arg.check_config = true;
                        break;
                case OPT_STATE:
                        (void)add_override("agent", "state_dir", optarg);
                        break;
                case OPT_RUNTIME:
                        (void)add_override("agent", "runtime_dir", optarg);
                        break;
                case OPT_USER:
                        (void)add_override("agent", "user", optarg);
                        break;
                case OPT_SINGLE:
                        arg.single_process = true;
                        break;
                case OPT_JOURNAL:
                        arg.journal = true;
                        break;
                case OPT_CHANNEL:
                        arg.channel_process = true;
                        break;
                case 'f':
                        arg.foreground = true;
                        break;
                case 'd':
                        arg.debug = true;
                        break;
                case 'h':
                        help();
                        return 0;
                case OPT_VERSION:
                        printf("tetherd %s\n", TETHER_VERSION_STR);
                        return 0;
                default:
                        return -EINVAL;
                }
        }
        if (optind < argc) {
                fprintf(stderr, "tetherd: unexpected argument '%s'\n", argv[optind]);
                return -EINVAL;
        }
        return 1;
}

static int load_config(struct tether_config **ret) {
        struct tether_config *c = NULL;
        int r;

        r = tether_config_load(arg.config_path, &c);
        if (r < 0)
                return r;
        for (size_t i = 0; i < arg.n_overrides; i++)
                (void)tether_config_set(c, "command line", 0, arg.overrides[i].section, arg.overrides[i].key,
                                        arg.overrides[i].value);
        if (arg.debug)
                c->log_level = LOG_DEBUG;
        *ret = c;
        return 0;
}

static void print_line(void *userdata, const char *line) {
        printf("%s\n", line);
}

static int drop_privileges(const struct passwd *pw);

/* The channel process reads site_key and ca_file as its own user: check
 * them as that user too, in a child that drops to it, so that a file only
 * root can read fails here and not at the start of the service. */
static unsigned check_files_as_user(const struct tether_config *c) {
        struct passwd *pw = getpwnam(c->user);
        int status = 0;
        pid_t pid;

        if (!pw) {
                /* Not an error here: the check may run before the package
                 * made the user, or for a --single-process setup. A start
                 * as root without it fails clearly. */
                fprintf(stderr,
                        "tetherd: note: user '%s' ([agent] user) does not exist here: files not checked as "
                        "that user\n",
                        c->user);
                return 0;
        }
        fflush(stdout);
        pid = fork();
        if (pid < 0) {
                printf("%s: cannot check the files as user '%s': %m\n", arg.config_path, c->user);
                return 1;
        }
        if (pid == 0) {
                char who[128];
                /* Quiet: drop_privileges logs only on failure. */
                if (drop_privileges(pw) < 0)
                        _exit(1);
                snprintf(who, sizeof(who), "user '%s'", pw->pw_name);
                unsigned bad = tether_config_check_files(c, arg.config_path, who, print_line, NULL);
                fflush(stdout);
                _exit(bad > 0 ? 1 : 0);
        }
        if (waitpid(pid, &status, 0) < 0 || !WIFEXITED(status) || WEXITSTATUS(status) != 0)
                return 1;
        return 0;
}

static int check_config(void) {
        _cleanup_(tether_config_freep) struct tether_config *c = NULL;
        int r = load_config(&c);

        if (r < 0) {
                fprintf(stderr, "tetherd: %s\n", strerror(-r));
                return 1;
        }
        for (size_t i = 0; i < c->n_errors; i++)
                printf("%s\n", c->errors[i]);
        /* The files the configuration names must be usable too, so that
         * packaging and CI catch a wrong path before a start does: by this
         * process, and by the channel process's user where there is one. */
        bool bad = c->n_errors > 0;
        if (tether_config_check_files(c, arg.config_path, NULL, print_line, NULL) > 0)
                bad = true;
        else if (geteuid() == 0 && !arg.single_process && check_files_as_user(c) > 0)
                bad = true;
        if (!bad)
                printf("configuration OK\n");
        return bad ? 1 : 0;
}

/* Configuration problems that make running pointless. */
static bool config_fatal(const struct tether_config *c) {
        return !c->mp_host || (!c->site_key && !c->site_key_fingerprint && !c->trust_on_first_use);
}

static int drop_privileges(const struct passwd *pw) {
        gid_t gid = pw->pw_gid;
        uid_t uid = pw->pw_uid;

        if (setgroups(1, &gid) < 0)
                return log_error_errno(-errno, "setgroups failed: %m");
        if (setresgid(gid, gid, gid) < 0)
                return log_error_errno(-errno, "setresgid(%u) failed: %m", (unsigned)gid);
        if (setresuid(uid, uid, uid) < 0)
                return log_error_errno(-errno, "setresuid(%u) failed: %m", (unsigned)uid);
        /* Make sure there is no way back. */
        if (uid != 0 && (setuid(0) == 0 || geteuid() != uid || getegid() != gid))
                return log_error_errno(-EPERM, "Privileges could not be dropped for good");
        if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) < 0)
                return log_error_errno(-errno, "PR_SET_NO_NEW_PRIVS failed: %m");
        return 0;
}

static int on_child_kill_timer(sd_event_source *s, uint64_t usec, void *userdata) {
        if (run.child > 0) {
                log_warning("The channel process did not stop in time; killing it");
                (void)kill(run.child, SIGKILL);
        }
        return 0;
}

static int on_stop_signal(sd_event_source *s, const struct signalfd_siginfo *si, void *userdata) {
        if (run.stopping)
                return 0;
        run.stopping = true;
        log_info("Received %s, stopping", strsignal((int)si->ssi_signo));
        if (run.sched)
                schedd_stop(run.sched);
        if (run.channel)
                channeld_stop(run.channel);
        if (run.child > 0) {
                /* Wait for the channel process: it may still be saying GOODBYE. */
                (void)kill(run.child, SIGTERM);
                (void)sd_event_add_time_relative(run.event, &run.child_kill_timer, CLOCK_MONOTONIC,
                                                 CHILD_STOP_TIMEOUT_USEC, 0, on_child_kill_timer, NULL);
                return 0;
        }
        return sd_event_exit(run.event, 0);
}

static int on_reload_signal(sd_event_source *s, const struct signalfd_siginfo *si, void *userdata) {
        struct tether_config *c = NULL, *c2 = NULL;
        int r;

        r = load_config(&c);
        if (r < 0)
                return log_error_errno(r, "Cannot reload the configuration: %m");
        for (size_t i = 0; i < c->n_errors; i++)
                log_warning("%s", c->errors[i]);
        if (config_fatal(c)) {
                log_error("The new configuration is not usable; keeping the old one");
                tether_config_free(c);
                return 0;
        }
        if (run.child > 0)
                (void)kill(run.child, SIGHUP);
        if (run.sched) {
                (void)schedd_reload(run.sched, c);
                tether_config_free(run.sched_config);
                run.sched_config = c;
                c = NULL;
        }
        if (run.channel) {
                if (!c) {
                        r = load_config(&c2);
                        if (r < 0)
                                return log_error_errno(r, "Cannot reload the configuration: %m");
                        c = c2;
                }
                (void)channeld_reload(run.channel, c);
                c = NULL;
        }
        tether_config_free(c);
        return 0;
}

/* --- supervision of the channel process (root process) --- */

/* In the forked child: the sockets on fixed numbers, nothing else of the
 * root process open, then this binary again. Never returns. */
static _Noreturn void exec_channel(int priv_fd) {
        int p = fcntl(priv_fd, F_DUPFD_CLOEXEC, 10), c = fcntl(run.control_fd, F_DUPFD_CLOEXEC, 10),
            e = fcntl(run.exe_fd, F_DUPFD_CLOEXEC, 10);

        if (p < 0 || c < 0 || e < 0 || dup2(p, CHANNEL_PRIV_FD) < 0 || dup2(c, CHANNEL_CONTROL_FD) < 0 ||
            dup3(e, CHANNEL_EXE_FD, O_CLOEXEC) < 0)
                _exit(EXIT_FAILURE);
        (void)close_range(CHANNEL_EXE_FD + 1, ~0U, 0);
        fexecve(CHANNEL_EXE_FD, run.channel_argv, environ);
        _exit(127);
}

static int on_child_exit(sd_event_source *s, const siginfo_t *si, void *userdata);

/* Starts a channel process over a fresh socket pair. */
static int spawn_channel(void) {
        int sp[2], r;
        pid_t pid;

        r = priv_socketpair(sp);
        if (r < 0)
                return log_error_errno(r, "Cannot create the privsep socket pair: %m");
        pid = fork();
        if (pid < 0) {
                r = -errno;
                close(sp[0]);
                close(sp[1]);
                return log_error_errno(r, "Cannot start the channel process: fork failed: %m");
        }
        if (pid == 0)
                exec_channel(sp[1]);
        close(sp[1]);
        r = sd_event_add_child(run.event, &run.child_source, pid, WEXITED, on_child_exit, NULL);
        if (r < 0) {
                (void)kill(pid, SIGKILL);
                (void)waitpid(pid, NULL, 0);
                close(sp[0]);
                return log_error_errno(r, "Cannot watch the channel process: %m");
        }
        run.child = pid;
        (void)sd_event_now(run.event, CLOCK_MONOTONIC, &run.child_started_usec);
        r = schedd_attach(run.sched, sp[0]);
        if (r < 0)
                log_warning_errno(r, "Cannot reach the new channel process yet: %m");
        log_debug("Channel process %d started", (int)pid);
        return 0;
}

static int on_respawn_timer(sd_event_source *s, uint64_t usec, void *userdata);

static void schedule_respawn(const char *what) {
        uint64_t now = 0, cap = (uint64_t)run.sched_config->respawn_delay_max_seconds * USEC_PER_SEC;

        (void)sd_event_now(run.event, CLOCK_MONOTONIC, &now);
        /* A minute of health forgives the past; a crash loop backs off. */
        if (run.respawn_delay_usec == 0 || now - run.child_started_usec >= RESPAWN_HEALTHY_USEC)
                run.respawn_delay_usec = RESPAWN_MIN_USEC;
        else
                run.respawn_delay_usec = run.respawn_delay_usec * 2;
        if (run.respawn_delay_usec > cap)
                run.respawn_delay_usec = cap;
        run.deaths++;
        log_warning("The channel process %s; starting a new one in %llu.%llu s (death %u)", what,
                    (unsigned long long)(run.respawn_delay_usec / USEC_PER_SEC),
                    (unsigned long long)(run.respawn_delay_usec % USEC_PER_SEC / 100000), run.deaths);
        (void)sd_notifyf(0, "STATUS=Channel process %s; restarting it in %llu.%llu s", what,
                         (unsigned long long)(run.respawn_delay_usec / USEC_PER_SEC),
                         (unsigned long long)(run.respawn_delay_usec % USEC_PER_SEC / 100000));
        run.respawn_timer = sd_event_source_disable_unref(run.respawn_timer);
        if (sd_event_add_time_relative(run.event, &run.respawn_timer, CLOCK_MONOTONIC,
                                       run.respawn_delay_usec, 0, on_respawn_timer, NULL) < 0) {
                log_error("Cannot arm the respawn timer; stopping");
                (void)sd_event_exit(run.event, 1);
        }
}

static int on_respawn_timer(sd_event_source *s, uint64_t usec, void *userdata) {
        run.respawn_timer = sd_event_source_disable_unref(run.respawn_timer);
        if (run.stopping)
                return 0;
        if (spawn_channel() < 0)
                schedule_respawn("could not be started");
        return 0;
}

static int on_child_exit(sd_event_source *s, const siginfo_t *si, void *userdata) {
        char what[96];

        run.child = -1;
        run.child_source = sd_event_source_disable_unref(run.child_source);
        schedd_detach(run.sched);
        if (run.stopping) {
                log_debug("The channel process has stopped");
                return sd_event_exit(run.event, 0);
        }
        if (si->si_code == CLD_EXITED && si->si_status == TETHER_EXIT_CONFIG) {
                /* Restarting cannot help: say so and let systemd see it. */
                log_error("The channel process cannot run with this configuration (see its messages; "
                          "'tetherd --check-config' lists the problems); stopping");
                run.stopping = true;
                schedd_stop(run.sched);
                return sd_event_exit(run.event, TETHER_EXIT_CONFIG);
        }
        if (si->si_code == CLD_EXITED)
                snprintf(what, sizeof(what), "exited with status %d", si->si_status);
        else
                snprintf(what, sizeof(what), "was killed by signal %s", strsignal(si->si_status));
        schedule_respawn(what);
        return 0;
}

static int setup_signals(sd_event *e, bool parent) {
        int r;

        r = sd_event_add_signal(e, NULL, SIGTERM, on_stop_signal, NULL);
        if (r >= 0)
                r = sd_event_add_signal(e, NULL, SIGINT, on_stop_signal, NULL);
        if (r >= 0)
                r = sd_event_add_signal(e, NULL, SIGHUP, on_reload_signal, NULL);
        return r;
}

static int run_loop(void) {
        int r = sd_event_loop(run.event);
        return r < 0 ? log_error_errno(r, "Event loop failed: %m") : r;
}

static void log_problem(void *userdata, const char *line) {
        log_error("%s", line);
}

/* Runs one channel process; returns its exit status. Takes config. */
static int channel_process(struct tether_config *config, int priv_fd, int control_fd,
                           const struct passwd *pw) {
        int r;

        /* Only the scheduler process speaks to systemd (it is the main PID). */
        unsetenv("NOTIFY_SOCKET");
        unsetenv("WATCHDOG_USEC");
        unsetenv("WATCHDOG_PID");
        if (pw) {
                r = drop_privileges(pw);
                if (r < 0) {
                        tether_config_free(config);
                        return 1;
                }
        }
        /* What this user cannot read, no restart will make readable. */
        if (tether_config_check_files(config, arg.config_path, NULL, log_problem, NULL) > 0) {
                log_error("The channel process cannot use the files the configuration names (as uid %u); "
                          "'tetherd --check-config' checks them",
                          (unsigned)getuid());
                tether_config_free(config);
                return TETHER_EXIT_CONFIG;
        }
        r = sd_event_new(&run.event);
        if (r < 0)
                return log_error_errno(r, "Cannot create the event loop: %m"), 1;
        r = setup_signals(run.event, false);
        if (r < 0)
                return log_error_errno(r, "Cannot watch signals: %m"), 1;
        r = channeld_new(run.event, config, priv_fd, control_fd, &run.channel);
        if (r < 0)
                return 1;
        r = channeld_start(run.channel);
        if (r < 0)
                return log_error_errno(r, "Cannot start the channel: %m"), 1;
        r = run_loop();
        run.channel = channeld_free(run.channel);
        run.event = sd_event_unref(run.event);
        return r < 0 ? 1 : r;
}

/* tetherd --channel-process: started by the root process (spawn_channel),
 * with the privsep socket and the control socket on fixed descriptors. */
static int channel_main(void) {
        struct tether_config *config = NULL;
        struct passwd *pw = NULL;
        int r;

        if (fcntl(CHANNEL_PRIV_FD, F_SETFD, FD_CLOEXEC) < 0 ||
            fcntl(CHANNEL_CONTROL_FD, F_SETFD, FD_CLOEXEC) < 0) {
                fprintf(stderr, "tetherd: --channel-process is for tetherd's own use: it needs its sockets "
                                "on descriptors 3 and 4\n");
                return 2;
        }
        r = load_config(&config);
        if (r < 0) {
                fprintf(stderr, "tetherd: cannot load the configuration: %s\n", strerror(-r));
                return 1;
        }
        logsink_setup("channel", arg.journal || (!arg.foreground && logsink_under_journal()),
                      config->cmtrace_file, config->log_level);
        if (config_fatal(config)) {
                log_error("The configuration is not usable; 'tetherd --check-config' lists every problem");
                tether_config_free(config);
                return TETHER_EXIT_CONFIG;
        }
        if (geteuid() == 0) {
                pw = getpwnam(config->user);
                if (!pw || pw->pw_uid == 0) {
                        log_error("[agent] user '%s' does not exist or is root", config->user);
                        tether_config_free(config);
                        return TETHER_EXIT_CONFIG;
                }
        }
        r = channel_process(config, CHANNEL_PRIV_FD, CHANNEL_CONTROL_FD, pw);
        logsink_teardown();
        return r;
}

/* The root process of the split: the scheduler, and the supervisor of the
 * channel processes. Returns the exit status. */
static int run_split(struct tether_config **configp, int argc, char **argv, int control_fd) {
        int r;

        run.control_fd = control_fd;
        run.exe_fd = open("/proc/self/exe", O_RDONLY | O_CLOEXEC);
        if (run.exe_fd < 0)
                return log_error_errno(-errno, "Cannot open /proc/self/exe (each channel process is a fresh "
                                               "execution of tetherd): %m"),
                       1;
        run.channel_argv = calloc((size_t)argc + 2, sizeof(char *));
        if (!run.channel_argv)
                return log_error("Out of memory"), 1;
        memcpy(run.channel_argv, argv, (size_t)argc * sizeof(char *));
        run.channel_argv[argc] = (char *)"--channel-process";
        r = sd_event_new(&run.event);
        if (r >= 0)
                r = setup_signals(run.event, true);
        if (r < 0)
                return log_error_errno(r, "Cannot set up the event loop: %m"), 1;
        run.sched_config = TAKE_PTR(*configp);
        r = schedd_new(run.event, run.sched_config, -1, &run.sched);
        if (r < 0)
                return 1;
        r = spawn_channel();
        if (r < 0)
                return 1;
        r = run_loop();
        if (run.child > 0) {
                (void)kill(run.child, SIGKILL);
                (void)waitpid(run.child, NULL, 0);
        }
        run.respawn_timer = sd_event_source_disable_unref(run.respawn_timer);
        return r < 0 ? 1 : r;
}

int main(int argc, char **argv) {
        _cleanup_(tether_config_freep) struct tether_config *config = NULL;
        struct passwd *pw = NULL;
        sigset_t mask;
        int sp[2] = {-1, -1}, control_fd = -1, r;
        bool split;
        _cleanup_(freep) char *sock_path = NULL;

        r = parse_argv(argc, argv);
        if (r <= 0)
                return r < 0 ? 2 : 0;
        if (arg.check_config)
                return check_config();

        /* Before any event loop exists (sd-event child and signal sources
         * need these blocked in every thread; the fork inherits the mask). */
        sigemptyset(&mask);
        sigaddset(&mask, SIGCHLD);
        sigaddset(&mask, SIGTERM);
        sigaddset(&mask, SIGINT);
        sigaddset(&mask, SIGHUP);
        if (sigprocmask(SIG_BLOCK, &mask, NULL) < 0)
                return 1;
        /* A closed stderr pipe or peer must cost an EPIPE, not the daemon.
         * (The scheduler resets dispositions for the children it starts.) */
        (void)signal(SIGPIPE, SIG_IGN);
        if (arg.channel_process)
                return channel_main();

        r = load_config(&config);
        if (r < 0) {
                fprintf(stderr, "tetherd: cannot load the configuration: %s\n", strerror(-r));
                return 1;
        }
        bool journal = arg.journal || (!arg.foreground && logsink_under_journal());
        split = geteuid() == 0 && !arg.single_process;
        logsink_setup(split ? "[priv]" : "tetherd", journal, config->cmtrace_file, config->log_level);
        for (size_t i = 0; i < config->n_errors; i++)
                log_warning("%s", config->errors[i]);
        if (config_fatal(config)) {
                log_error(
                        "The configuration is not usable (see above); 'tetherd --check-config' lists every "
                        "problem");
                return TETHER_EXIT_CONFIG;
        }
        log_info("tetherd %s starting, MP %s (%s), state in %s", TETHER_VERSION_STR, config->mp_host,
                 tether_config_transport_name(config->transport), config->state_dir);

        if (split) {
                errno = 0;
                pw = getpwnam(config->user);
                if (!pw) {
                        log_error("User '%s' does not exist: create it (packaging/sysusers.d), set [agent] "
                                  "user, "
                                  "or run with --single-process",
                                  config->user);
                        return TETHER_EXIT_CONFIG;
                }
                if (pw->pw_uid == 0) {
                        log_error("[agent] user '%s' is root: that would undo the privilege separation",
                                  config->user);
                        return TETHER_EXIT_CONFIG;
                }
        } else if (geteuid() != 0)
                log_notice("Not started as root (uid %u): running the channel and the scheduler in one "
                           "process, without privilege separation",
                           (unsigned)geteuid());
        else
                log_notice("--single-process: running the channel and the scheduler in one process as root");

        r = dirs_prepare_channel(config, pw);
        if (r < 0)
                return 1;
        if (geteuid() == 0) {
                _cleanup_(freep) char *root_state = NULL;
                r = dirs_root_state_path(config, &root_state);
                if (r >= 0)
                        r = dirs_prepare_root_state(root_state);
                if (r < 0)
                        return 1;
        }
        sock_path = path_join(config->runtime_dir, "tetherd.sock");
        if (!sock_path)
                return 1;
        control_fd = control_socket_bind(sock_path, split ? pw->pw_gid : (gid_t)-1);
        if (control_fd < 0) {
                log_error_errno(control_fd, "Cannot create the control socket '%s': %m", sock_path);
                return 1;
        }

        if (split)
                r = run_split(&config, argc, argv, control_fd);
        else {
                struct tether_config *channel_config = NULL;

                r = priv_socketpair(sp);
                if (r < 0) {
                        log_error_errno(r, "Cannot create the privsep socket pair: %m");
                        return 1;
                }
                r = load_config(&channel_config);
                if (r < 0)
                        return 1;
                r = sd_event_new(&run.event);
                if (r >= 0)
                        r = setup_signals(run.event, true);
                if (r < 0)
                        return log_error_errno(r, "Cannot set up the event loop: %m"), 1;
                run.sched_config = TAKE_PTR(config);
                r = schedd_new(run.event, run.sched_config, sp[0], &run.sched);
                if (r < 0)
                        return 1;
                r = channeld_new(run.event, channel_config, sp[1], control_fd, &run.channel);
                if (r < 0)
                        return 1;
                r = channeld_start(run.channel);
                if (r >= 0)
                        r = schedd_start(run.sched);
                if (r < 0)
                        return log_error_errno(r, "Cannot start: %m"), 1;
                r = run_loop();
                run.channel = channeld_free(run.channel);
                r = r < 0 ? 1 : r;
        }
        run.sched = schedd_free(run.sched);
        run.child_source = sd_event_source_unref(run.child_source);
        run.child_kill_timer = sd_event_source_unref(run.child_kill_timer);
        run.event = sd_event_unref(run.event);
        tether_config_free(run.sched_config);
        free(run.channel_argv);
        if (run.exe_fd >= 0)
                close(run.exe_fd);
        if (split && run.control_fd >= 0)
                close(run.control_fd);
        (void)unlink(sock_path);
        logsink_teardown();
        return r;
}
