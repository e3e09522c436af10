/* SPDX-License-Identifier: Apache-2.0 */
/*
 * tetherd: the Tether client notification agent.
 *
 * Started as root, it forks: the child (the channel process) drops to the
 * "tether" user and owns the network, the spool, the identity and the
 * control socket; the parent (the scheduler process) stays root and runs the
 * cycles. Not started as root, it runs both halves in one process.
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
#define CHILD_STOP_TIMEOUT_USEC (15ULL * 1000000ULL)

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
} run = {.child = -1};

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
        enum { OPT_CHECK = 0x100, OPT_STATE, OPT_RUNTIME, OPT_USER, OPT_SINGLE, OPT_JOURNAL, OPT_VERSION };
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
         * packaging and CI catch a wrong path before a start does. */
        bool bad = c->n_errors > 0;
        if (c->site_key) {
                struct tether_key *key = NULL;
                r = tether_key_load_public(c->site_key, &key);
                tether_key_free(key);
                if (r < 0) {
                        printf("%s: [trust] site_key: cannot load '%s': %s\n", arg.config_path, c->site_key,
                               strerror(-r));
                        bad = true;
                }
        }
        if (c->ca_file && access(c->ca_file, R_OK) < 0) {
                printf("%s: [mp] ca_file: cannot read '%s': %m\n", arg.config_path, c->ca_file);
                bad = true;
        }
        if (c->machine_id_file && access(c->machine_id_file, R_OK) < 0 && errno != ENOENT) {
                printf("%s: [agent] machine_id_file: cannot read '%s': %m\n", arg.config_path,
                       c->machine_id_file);
                bad = true;
        }
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

static int on_child_exit(sd_event_source *s, const siginfo_t *si, void *userdata) {
        run.child = -1;
        if (run.stopping) {
                log_debug("The channel process has stopped");
                return sd_event_exit(run.event, 0);
        }
        if (si->si_code == CLD_EXITED)
                log_error("The channel process exited with status %d; stopping", si->si_status);
        else
                log_error("The channel process was killed by signal %s; stopping", strsignal(si->si_status));
        if (run.sched)
                schedd_stop(run.sched);
        return sd_event_exit(run.event, 1);
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
                        return r;
                }
        }
        r = sd_event_new(&run.event);
        if (r < 0)
                return log_error_errno(r, "Cannot create the event loop: %m");
        r = setup_signals(run.event, false);
        if (r < 0)
                return log_error_errno(r, "Cannot watch signals: %m");
        r = channeld_new(run.event, config, priv_fd, control_fd, &run.channel);
        if (r < 0)
                return r;
        r = channeld_start(run.channel);
        if (r < 0)
                return log_error_errno(r, "Cannot start the channel: %m");
        r = run_loop();
        run.channel = channeld_free(run.channel);
        run.event = sd_event_unref(run.event);
        return r;
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
                return 1;
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
                        return 1;
                }
                if (pw->pw_uid == 0) {
                        log_error("[agent] user '%s' is root: that would undo the privilege separation",
                                  config->user);
                        return 1;
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
        r = priv_socketpair(sp);
        if (r < 0) {
                log_error_errno(r, "Cannot create the privsep socket pair: %m");
                return 1;
        }

        if (split) {
                struct tether_config *child_config = NULL;

                r = load_config(&child_config);
                if (r < 0)
                        return 1;
                run.child = fork();
                if (run.child < 0)
                        return log_error_errno(-errno, "fork failed: %m"), 1;
                if (run.child == 0) {
                        close(sp[0]);
                        logsink_setup("channel", journal, config->cmtrace_file, config->log_level);
                        r = channel_process(child_config, sp[1], control_fd, pw);
                        _exit(r < 0 ? 1 : r);
                }
                tether_config_free(child_config);
                close(sp[1]);
                close(control_fd);
                r = sd_event_new(&run.event);
                if (r >= 0)
                        r = setup_signals(run.event, true);
                if (r >= 0)
                        r = sd_event_add_child(run.event, &run.child_source, run.child, WEXITED,
                                               on_child_exit, NULL);
                if (r < 0) {
                        log_error_errno(r, "Cannot set up the event loop: %m");
                        (void)kill(run.child, SIGTERM);
                        return 1;
                }
                run.sched_config = TAKE_PTR(config);
                r = schedd_new(run.event, run.sched_config, sp[0], &run.sched);
                if (r >= 0)
                        r = schedd_start(run.sched);
                if (r < 0) {
                        (void)kill(run.child, SIGTERM);
                        return 1;
                }
                r = run_loop();
                if (run.child > 0) {
                        (void)kill(run.child, SIGKILL);
                        (void)waitpid(run.child, NULL, 0);
                }
        } else {
                struct tether_config *channel_config = NULL;

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
        }
        run.sched = schedd_free(run.sched);
        run.child_source = sd_event_source_unref(run.child_source);
        run.child_kill_timer = sd_event_source_unref(run.child_kill_timer);
        run.event = sd_event_unref(run.event);
        tether_config_free(run.sched_config);
        (void)unlink(sock_path);
        logsink_teardown();
        return r < 0 ? 1 : r;
}
