/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The cycle queue and the three cycle runners. See scheduler.h for the
 * rules; this file keeps one run at a time and drives it as a small state
 * machine from a single deferred event ("kick"), so that no callback into
 * the owner ever happens in the middle of a state change.
 */
#include "scheduler/scheduler.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <limits.h>
#include <pwd.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <systemd/sd-login.h>

#include "common/cleanup.h"
#include "common/log.h"
#include "common/strutil.h"
#include "scheduler/child.h"
#include "scheduler/internal.h"
#include "scheduler/policy.h"

#define USEC_PER_SEC 1000000ULL
#define DEFAULT_GRACE_USEC (5 * USEC_PER_SEC)
#define DEFAULT_OUTPUT_CAP (64u * 1024u)
#define DETAIL_WORK_MAX (4 * TETHER_DETAIL_MAX)
#define OUTPUT_EXCERPT_MAX 160
#define FIXED_PATH "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

/* ---- Detail text ---------------------------------------------------- */

struct detail {
        char *buf;
        size_t len;
        bool overflow;
};

static void detail_add(struct detail *d, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void detail_add(struct detail *d, const char *fmt, ...) {
        va_list ap;
        int n;

        if (d->overflow)
                return;
        if (!d->buf) {
                d->buf = malloc(DETAIL_WORK_MAX + 1);
                if (!d->buf) {
                        d->overflow = true;
                        return;
                }
                d->buf[0] = '\0';
        }
        if (d->len > 0 && d->len + 2 < DETAIL_WORK_MAX) {
                memcpy(d->buf + d->len, "; ", 3);
                d->len += 2;
        }
        va_start(ap, fmt);
        n = vsnprintf(d->buf + d->len, DETAIL_WORK_MAX + 1 - d->len, fmt, ap);
        va_end(ap);
        if (n < 0 || d->len + (size_t)n > DETAIL_WORK_MAX) {
                d->len = DETAIL_WORK_MAX;
                d->overflow = true;
        } else {
                d->len += (size_t)n;
        }
        d->buf[d->len] = '\0';
}

static size_t utf8_seq_len(unsigned char c) {
        if (c < 0x80)
                return 1;
        if ((c & 0xe0) == 0xc0)
                return 2;
        if ((c & 0xf0) == 0xe0)
                return 3;
        if ((c & 0xf8) == 0xf0)
                return 4;
        return 0;
}

/* Copies src into a new string that is valid UTF-8 with no control
 * characters (XML 1.0 cannot carry them; a response must stay readable),
 * at most max bytes, ending in "..." when cut. */
static char *text_clean(const char *src, size_t len, size_t max) {
        char *out = malloc(len + 4);
        size_t o = 0, i = 0;

        if (!out)
                return NULL;
        while (i < len) {
                unsigned char c = (unsigned char)src[i];
                size_t n = utf8_seq_len(c);

                if (n == 1) {
                        out[o++] = (c < 0x20 || c == 0x7f) ? ' ' : (char)c;
                        i++;
                } else if (n > 1 && i + n <= len && utf8_is_valid((const uint8_t *)src + i, n)) {
                        memcpy(out + o, src + i, n);
                        o += n;
                        i += n;
                } else {
                        out[o++] = '?';
                        i++;
                }
        }
        out[o] = '\0';
        if (o > max) {
                size_t cut = max - 3;
                /* Back up to the start of a character. */
                while (cut > 0 && ((unsigned char)out[cut] & 0xc0) == 0x80)
                        cut--;
                memcpy(out + cut, "...", 4);
        }
        return out;
}

/* The last line or so of a child's output, for Detail. */
static char *output_excerpt(const struct child_result *res) {
        size_t len = res->output_len, start;

        while (len > 0 &&
               (res->output[len - 1] == '\n' || res->output[len - 1] == '\r' || res->output[len - 1] == ' '))
                len--;
        if (len == 0)
                return NULL;
        start = len > OUTPUT_EXCERPT_MAX ? len - OUTPUT_EXCERPT_MAX : 0;
        /* Start at a line boundary when one is near. */
        for (size_t i = len; i > start; i--)
                if (res->output[i - 1] == '\n') {
                        start = i;
                        break;
                }
        while (start < len && ((unsigned char)res->output[start] & 0xc0) == 0x80)
                start++;
        return text_clean(res->output + start, len - start, OUTPUT_EXCERPT_MAX);
}

/* ---- String vectors for argv/envp ---------------------------------- */

struct strv {
        char **v;
        size_t n;
        bool oom;
};

static void strv_addf(struct strv *sv, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void strv_addf(struct strv *sv, const char *fmt, ...) {
        va_list ap;
        char *s = NULL, **nv;

        if (sv->oom)
                return;
        va_start(ap, fmt);
        if (vasprintf(&s, fmt, ap) < 0)
                s = NULL;
        va_end(ap);
        nv = s ? realloc(sv->v, (sv->n + 2) * sizeof(char *)) : NULL;
        if (!nv) {
                free(s);
                sv->oom = true;
                return;
        }
        sv->v = nv;
        sv->v[sv->n++] = s;
        sv->v[sv->n] = NULL;
}

static void strv_clear(struct strv *sv) {
        for (size_t i = 0; i < sv->n; i++)
                free(sv->v[i]);
        free(sv->v);
        *sv = (struct strv){0};
}

/* ---- Objects ----------------------------------------------------------- */

struct waiter {
        struct waiter *next;
        enum tether_task_type cycle;
        char *task_guid;
        bool periodic;
};

struct user_entry {
        char *name;
        uid_t uid;
        gid_t gid;
        char *home;
        gid_t *groups;
        size_t n_groups;
};

struct hook {
        char *name;
        int fd;
};

enum app_step {
        APP_DETECT,
        APP_ACT,
        APP_REDETECT,
};

struct app_item {
        const struct policy_app *app; /* borrowed from run->policies */
        const char *user;             /* borrowed; NULL for the machine policy */
        int policy_fd;                /* borrowed from run->policy_fds: its verified bytes */
};

enum phase {
        PHASE_START,
        PHASE_WAIT_POLICY,
        PHASE_HOOK_NEXT,
        PHASE_HOOK_WAIT,
        PHASE_USER_NEXT,
        PHASE_APP_NEXT,
        PHASE_APP_WAIT,
};

struct policy_answer {
        char *user;
        enum tether_policy_result result;
        uint8_t *body;
        size_t len;
        uint8_t *sig;
        size_t sig_len;
        int error;
};

struct run {
        struct run *next;
        enum tether_task_type cycle;
        char *param;
        char *first_guid;
        struct waiter *waiters;
        struct waiter **waiters_tail;
        bool has_periodic;
        bool cancelled;

        enum phase phase;
        uint64_t deadline;
        sd_event_source *deadline_source;
        struct detail detail;
        uint32_t return_code;

        /* policy cycles */
        struct policy_answer *answer;
        const char *awaiting_user; /* NULL for the machine policy */
        int policy_fd;             /* hooks: the verified policy on fd 3; -1 for none */
        struct user_entry *users;
        size_t n_users, user_index;
        struct user_entry *current_user;
        bool hooks_listed;
        struct hook *hooks;
        size_t n_hooks, hook_index;
        size_t hooks_failed;

        /* app evaluation */
        struct policy **policies;
        int *policy_fds; /* one per policy: its verified bytes (policy_seal) */
        size_t n_policies;
        struct app_item *apps;
        size_t n_apps, app_index;
        enum app_step app_step;
        bool app_failed;

        struct child *child;
};

struct periodic {
        sd_event_source *source;
        uint64_t interval;
        uint64_t offset_seed;
        uint64_t next;
};

struct tether_scheduler {
        sd_event *event;
        char *state_dir;
        char *cycles_dir;
        const struct tether_key *site_key;
        uint64_t time_limit[TETHER_TASK_TYPE_MAX + 1];
        uint64_t option_interval[TETHER_TASK_TYPE_MAX + 1];
        uint64_t grace;
        size_t output_cap;
        uid_t own_uid;

        tether_cycle_done_fn done;
        tether_policy_request_fn policy_request;
        void *userdata;
        tether_child_output_fn output_fn;
        void *output_userdata;
        tether_active_uids_fn active_uids;
        void *active_uids_userdata;

        sd_event_source *kick;
        struct run *queue; /* not yet running, FIFO */
        struct run *running;
        struct periodic periodic[TETHER_TASK_TYPE_MAX + 1];
        uint64_t anchor; /* CLOCK_BOOTTIME at creation */
};

static const char *cycle_name(enum tether_task_type cycle) {
        return tether_task_type_cli_name(cycle);
}

static bool cycle_valid(int cycle) {
        return cycle >= TETHER_TASK_MACHINE_POLICY && cycle <= TETHER_TASK_TYPE_MAX;
}

static void policy_answer_free(struct policy_answer *a) {
        if (!a)
                return;
        free(a->user);
        free(a->body);
        free(a->sig);
        free(a);
}

static void user_entry_clear(struct user_entry *u) {
        free(u->name);
        free(u->home);
        free(u->groups);
}

static void waiters_free(struct waiter *w) {
        while (w) {
                struct waiter *next = w->next;
                free(w->task_guid);
                free(w);
                w = next;
        }
}

static void run_free(struct run *run) {
        if (!run)
                return;
        run->child = child_free(run->child);
        run->deadline_source = sd_event_source_disable_unref(run->deadline_source);
        waiters_free(run->waiters);
        free(run->param);
        free(run->first_guid);
        free(run->detail.buf);
        policy_answer_free(run->answer);
        if (run->policy_fd >= 0)
                close(run->policy_fd);
        for (size_t i = 0; i < run->n_users; i++)
                user_entry_clear(&run->users[i]);
        free(run->users);
        for (size_t i = 0; i < run->n_hooks; i++) {
                free(run->hooks[i].name);
                if (run->hooks[i].fd >= 0)
                        close(run->hooks[i].fd);
        }
        free(run->hooks);
        free(run->apps);
        for (size_t i = 0; i < run->n_policies; i++) {
                policy_free(run->policies[i]);
                if (run->policy_fds[i] >= 0)
                        close(run->policy_fds[i]);
        }
        free(run->policies);
        free(run->policy_fds);
        free(run);
}

static void kick(struct tether_scheduler *s) {
        (void)sd_event_source_set_enabled(s->kick, SD_EVENT_ONESHOT);
}

static uint64_t now_monotonic(struct tether_scheduler *s) {
        uint64_t now = 0;

        (void)sd_event_now(s->event, CLOCK_MONOTONIC, &now);
        return now;
}

/* ---- Answering ------------------------------------------------------------ */

static void answer_waiters(struct tether_scheduler *s, enum tether_task_type cycle, struct waiter *waiters,
                           uint32_t rc, const char *detail) {
        while (waiters) {
                struct waiter *next = waiters->next;
                if (s->done)
                        s->done(s, cycle, waiters->task_guid, rc, detail, s->userdata);
                free(waiters->task_guid);
                free(waiters);
                waiters = next;
        }
}

/* Ends the running run: detaches it first, so that callbacks may submit. */
static void run_finish(struct tether_scheduler *s, struct run *run, uint32_t rc) {
        _cleanup_(freep) char *detail = NULL;
        struct waiter *waiters = run->waiters;
        enum tether_task_type cycle = run->cycle;

        if (run->detail.len == 0)
                detail_add(&run->detail, "%s", rc == TETHER_RC_SUCCESS ? "completed" : "failed");
        detail = text_clean(run->detail.buf ? run->detail.buf : "", run->detail.len, TETHER_DETAIL_MAX);
        run->waiters = NULL;
        if (s->running == run)
                s->running = NULL;
        run_free(run);
        kick(s);
        log_debug("%s: done, ReturnCode %u: %s", cycle_name(cycle), rc, detail ? detail : "");
        answer_waiters(s, cycle, waiters, rc, detail ? detail : "out of memory");
}

/* ---- Children -------------------------------------------------------------- */

static void on_child_done(struct child *c, void *userdata) {
        struct tether_scheduler *s = userdata;

        kick(s);
}

static void report_output(struct tether_scheduler *s, struct run *run) {
        const struct child_result *res = child_get_result(run->child);

        if (!s->output_fn)
                return;
        s->output_fn(s, run->cycle, child_get_step(run->child),
                     res->end == CHILD_EXITED ? res->status : -res->status, res->output, res->output_len,
                     res->output_total, s->output_userdata);
}

static void env_common(struct tether_scheduler *s, struct run *run, struct strv *env) {
        strv_addf(env, "%s", FIXED_PATH);
        strv_addf(env, "TETHER_CYCLE=%s", cycle_name(run->cycle));
        strv_addf(env, "TETHER_TASK_GUID=%s", run->first_guid ? run->first_guid : "");
        strv_addf(env, "TETHER_TASK_PARAM=%s", run->param);
        strv_addf(env, "TETHER_STATE_DIR=%s", s->state_dir);
}

/* ---- Policy answers --------------------------------------------------------- */

static int request_policy(struct tether_scheduler *s, struct run *run, const char *user) {
        int r;

        run->awaiting_user = user;
        run->phase = PHASE_WAIT_POLICY;
        if (!s->policy_request)
                return -EOPNOTSUPP;
        r = s->policy_request(s, user, s->userdata);
        return r < 0 ? r : 0;
}

/* Applies the effective machine policy's Intervals (or the options'). */
static void periodic_update(struct tether_scheduler *s, const struct policy *machine);

/* An errno the channel process sent, as text: it is not trusted to send
 * one in range (abs(INT_MIN) is undefined). */
static const char *peer_strerror(int error) {
        if (error < 0 && error > -4096)
                return strerror(-error);
        if (error > 0 && error < 4096)
                return strerror(error);
        return "unknown error";
}

/* Puts the verified policy in force for the hooks: fd 3, or none (-1)
 * when the scope has no policy. A signed empty Policy is a policy: hooks
 * read it and find nothing to set up. */
static void hand_policy(struct run *run, int fd) {
        if (run->policy_fd >= 0)
                close(run->policy_fd);
        run->policy_fd = fd;
}

/* 304 and 404: the stored policy stays in force. A 404 is not signed, so
 * it never removes anything (only a signed empty Policy does). */
static int take_stored(struct tether_scheduler *s, struct run *run, const char *label, bool not_found) {
        const char *user = run->awaiting_user;
        _cleanup_(policy_freep) struct policy *stored = NULL;
        char reason[256] = "";
        int fd = -1, r;

        r = policy_load(s->site_key, s->state_dir, user, &stored, &fd, reason, sizeof(reason));
        if (r == -ENOENT && not_found) {
                detail_add(&run->detail, "%s: no policy", label);
                hand_policy(run, -1);
                return 0;
        }
        if (r == -ENOENT) {
                detail_add(&run->detail,
                           "%s: unchanged, but no stored policy (fetch it again without If-None-Match)",
                           label);
                return -EBADMSG;
        }
        if (r < 0) {
                detail_add(&run->detail, "%s: stored policy refused: %s", label,
                           reason[0] ? reason : strerror(-r));
                return -EBADMSG;
        }
        if (not_found)
                detail_add(&run->detail, "%s: no policy on the MP (404), policy %s%s kept", label,
                           stored->policy_id, stored->empty ? " (empty)" : "");
        else
                detail_add(&run->detail, "%s: policy %s%s unchanged", label, stored->policy_id,
                           stored->empty ? " (empty)" : "");
        if (!user)
                periodic_update(s, stored);
        hand_policy(run, TAKE_FD(fd));
        return 0;
}

/* The newest TimeStamp the scope ever accepted: the floor file, or the
 * stored policy's for a state written before the floor existed. */
static int rollback_floor(struct tether_scheduler *s, const char *user, char floor[POLICY_TIMESTAMP_SIZE]) {
        _cleanup_(policy_freep) struct policy *stored = NULL;
        int r;

        floor[0] = 0;
        r = policy_floor_get(s->state_dir, user, floor);
        if (r < 0 && r != -ENOENT)
                return r;
        if (policy_load(s->site_key, s->state_dir, user, &stored, NULL, NULL, 0) >= 0 &&
            strcmp(stored->timestamp, floor) > 0)
                memcpy(floor, stored->timestamp, POLICY_TIMESTAMP_SIZE);
        return 0;
}

static int take_new(struct tether_scheduler *s, struct run *run, const char *label,
                    struct policy_answer *a) {
        const char *user = run->awaiting_user;
        _cleanup_(policy_freep) struct policy *fresh = NULL;
        char reason[256] = "", floor[POLICY_TIMESTAMP_SIZE];
        int fd, r;

        r = policy_verify_parse(s->site_key, a->body, a->len, a->sig, a->sig_len, user, &fresh, reason,
                                sizeof(reason));
        if (r < 0) {
                detail_add(&run->detail, "%s: policy rejected: %s", label,
                           reason[0] ? reason : strerror(-r));
                return -EBADMSG;
        }
        r = rollback_floor(s, user, floor);
        if (r < 0) {
                detail_add(&run->detail, "%s: policy rejected: the rollback floor is unreadable: %s", label,
                           strerror(-r));
                return -EBADMSG;
        }
        /* A validly signed but older revision is a replay. */
        if (strcmp(fresh->timestamp, floor) < 0) {
                detail_add(&run->detail,
                           "%s: policy rejected: TimeStamp %s is older than %s, the newest accepted", label,
                           fresh->timestamp, floor);
                return -EBADMSG;
        }
        /* The floor first: a crash after it leaves the new floor with the
         * old policy, which only refuses what is older than the new one. */
        r = policy_floor_raise(s->state_dir, user, fresh->timestamp);
        if (r >= 0)
                r = policy_store(s->state_dir, user, a->body, a->len, a->sig, a->sig_len);
        if (r < 0) {
                detail_add(&run->detail, "%s: storing the policy failed: %s", label, strerror(-r));
                return -EBADMSG;
        }
        fd = policy_seal(a->body, a->len);
        if (fd < 0) {
                detail_add(&run->detail, "%s: cannot hand the policy over: %s", label, strerror(-fd));
                return -EBADMSG;
        }
        detail_add(&run->detail, "%s: policy %s%s stored", label, fresh->policy_id,
                   fresh->empty ? " (empty)" : "");
        if (!user)
                periodic_update(s, fresh);
        hand_policy(run, fd);
        return 0;
}

/* Handles the answer for the policy being fetched. Returns 0 when the
 * policy (or its absence) is in place, with run->policy_fd set; negative
 * when the cycle's step failed (Detail written). */
static int take_policy_answer(struct tether_scheduler *s, struct run *run, const char *label) {
        struct policy_answer *a = run->answer;
        int r = -EBADMSG;

        run->answer = NULL;
        if (run->awaiting_user && !policy_user_name_valid(run->awaiting_user)) {
                detail_add(&run->detail, "%s: bad user name", label);
                goto done;
        }
        switch (a->result) {
        case TETHER_POLICY_ERROR:
                detail_add(&run->detail, "%s: fetch failed: %s", label, peer_strerror(a->error));
                break;
        case TETHER_POLICY_NONE:
                r = take_stored(s, run, label, true);
                break;
        case TETHER_POLICY_UNCHANGED:
                r = take_stored(s, run, label, false);
                break;
        case TETHER_POLICY_NEW:
                r = take_new(s, run, label, a);
                break;
        }
done:
        policy_answer_free(a);
        return r;
}

/* ---- Hooks ---------------------------------------------------------------- */

static bool hook_name_valid(const char *name) {
        if (!name[0])
                return false;
        for (const char *p = name; *p; p++)
                if (!((*p >= 'A' && *p <= 'Z') || (*p >= 'a' && *p <= 'z') || (*p >= '0' && *p <= '9') ||
                      *p == '_' || *p == '-'))
                        return false;
        return true;
}

static int hook_dirent_filter(const struct dirent *de) {
        return hook_name_valid(de->d_name); /* like run-parts: backups, dpkg leftovers, dotfiles */
}

/* run-parts order, byte-wise so that no locale changes it. */
static int hook_dirent_cmp(const struct dirent **a, const struct dirent **b) {
        return strcmp((*a)->d_name, (*b)->d_name);
}

/* Opens and checks every hook of the cycle's directory, in run-parts order,
 * so that hooks run and skipped ones are named in Detail in an order that
 * does not depend on the filesystem. Returns negative only when the
 * directory itself is unsafe (Detail written). */
static int list_hooks(struct tether_scheduler *s, struct run *run) {
        _cleanup_(freep) char *dir_path = NULL;
        _cleanup_(closep) int dir_fd = -1;
        struct dirent **names = NULL;
        struct stat st;
        size_t cap = 0;
        int n, r = 0;

        run->hooks_listed = true;
        if (!s->cycles_dir)
                return 0;
        if (asprintf(&dir_path, "%s/%s", s->cycles_dir, cycle_name(run->cycle)) < 0)
                return -ENOMEM;
        dir_fd = open(dir_path, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        if (dir_fd < 0) {
                if (errno == ENOENT)
                        return 0;
                detail_add(&run->detail, "hooks directory %s: %s", dir_path, strerror(errno));
                return -errno;
        }
        if (fstat(dir_fd, &st) < 0)
                return -errno;
        if ((st.st_uid != 0 && st.st_uid != s->own_uid) || (st.st_mode & 022)) {
                detail_add(&run->detail,
                           "hooks directory %s is not owned by root or is writable by group "
                           "or others: no hook run",
                           dir_path);
                return -EPERM;
        }
        n = scandirat(dir_fd, ".", &names, hook_dirent_filter, hook_dirent_cmp);
        if (n < 0) {
                detail_add(&run->detail, "hooks directory %s: %s", dir_path, strerror(errno));
                return -errno;
        }

        for (int i = 0; i < n; i++) {
                const char *name = names[i]->d_name;
                const char *reason = NULL;
                int fd;

                if (r < 0)
                        break;
                /* Never open a device or FIFO just to find out what it is. */
                if (fstatat(dir_fd, name, &st, 0) < 0 || !S_ISREG(st.st_mode)) {
                        detail_add(&run->detail, "skipped: %s (not a regular file)", name);
                        continue;
                }
                fd = openat(dir_fd, name, O_RDONLY | O_CLOEXEC | O_NONBLOCK | O_NOCTTY);
                if (fd < 0) {
                        detail_add(&run->detail, "skipped: %s (%s)", name, strerror(errno));
                        continue;
                }
                if (fstat(fd, &st) < 0)
                        reason = "cannot stat";
                else if (!S_ISREG(st.st_mode))
                        reason = "not a regular file";
                else if (st.st_uid != 0 && st.st_uid != s->own_uid)
                        reason = "not owned by root";
                else if (st.st_mode & 022)
                        reason = "writable by group or others";
                else if (!(st.st_mode & S_IXUSR))
                        reason = "not executable";
                if (reason) {
                        log_debug("%s: skipping hook %s: %s", cycle_name(run->cycle), name, reason);
                        detail_add(&run->detail, "skipped: %s (%s)", name, reason);
                        close(fd);
                        continue;
                }
                if (run->n_hooks == cap) {
                        size_t ncap = cap ? cap * 2 : 8;
                        struct hook *nh = realloc(run->hooks, ncap * sizeof(*nh));
                        if (!nh) {
                                close(fd);
                                r = -ENOMEM;
                                continue;
                        }
                        run->hooks = nh;
                        cap = ncap;
                }
                run->hooks[run->n_hooks].name = strdup(name);
                if (!run->hooks[run->n_hooks].name) {
                        close(fd);
                        r = -ENOMEM;
                        continue;
                }
                run->hooks[run->n_hooks].fd = fd;
                run->n_hooks++;
        }
        for (int i = 0; i < n; i++)
                free(names[i]);
        free(names);
        return r;
}

static int spawn_hook(struct tether_scheduler *s, struct run *run, const struct hook *hook) {
        struct user_entry *u = run->current_user;
        _cleanup_(freep) char *step = NULL, *argv0 = NULL;
        struct strv env = {0};
        struct child_cred cred;
        char *argv[2];
        struct child_spec spec = {
                .exec_fd = hook->fd,
                .policy_fd = run->policy_fd,
                .cwd = "/", /* never a directory another user can write (python's sys.path[0]...) */
                .deadline_usec = run->deadline,
                .grace_usec = s->grace,
                .output_cap = s->output_cap,
        };
        int r;

        if (run->policy_fd >= 0 && lseek(run->policy_fd, 0, SEEK_SET) < 0)
                return -errno;
        if (asprintf(&step, "%s%shook %s", u ? u->name : "", u ? ": " : "", hook->name) < 0)
                return -ENOMEM;
        if (asprintf(&argv0, "%s/%s/%s", s->cycles_dir, cycle_name(run->cycle), hook->name) < 0)
                return -ENOMEM;
        argv[0] = argv0;
        argv[1] = NULL;

        env_common(s, run, &env);
        /* The verified bytes themselves, never a path that could be
         * swapped after the check. Each hook reads from the start. */
        strv_addf(&env, "TETHER_POLICY=%s", run->policy_fd >= 0 ? "/dev/fd/3" : "");
        if (u) {
                strv_addf(&env, "TETHER_USER=%s", u->name);
                strv_addf(&env, "HOME=%s", u->home);
                strv_addf(&env, "USER=%s", u->name);
                strv_addf(&env, "LOGNAME=%s", u->name);
                cred = (struct child_cred){
                        .uid = u->uid,
                        .gid = u->gid,
                        .groups = u->groups,
                        .n_groups = u->n_groups,
                };
                spec.cred = &cred;
                spec.cwd = u->home;
        }
        if (env.oom) {
                strv_clear(&env);
                return -ENOMEM;
        }
        spec.step = step;
        spec.argv = argv;
        spec.envp = env.v;
        r = child_spawn(s->event, &spec, on_child_done, s, &run->child);
        strv_clear(&env);
        return r;
}

/* Records the hook's outcome. Returns true when the cycle must stop (its
 * time limit is reached). */
static bool hook_result(struct tether_scheduler *s, struct run *run) {
        const struct child_result *res = child_get_result(run->child);
        _cleanup_(freep) char *excerpt = output_excerpt(res);
        const char *step = child_get_step(run->child);

        report_output(s, run);
        if (res->timed_out) {
                detail_add(&run->detail, "%s timed out (cycle time limit), stopped", step);
                run->return_code = TETHER_RC_TIMED_OUT;
                return true;
        }
        if (res->end == CHILD_EXITED && res->status == 0)
                return false;
        run->hooks_failed++;
        if (run->return_code == TETHER_RC_SUCCESS)
                run->return_code = TETHER_RC_FAILED;
        if (res->end == CHILD_EXITED)
                detail_add(&run->detail, "%s failed (exit %d)%s%s", step, res->status, excerpt ? ": " : "",
                           excerpt ? excerpt : "");
        else
                detail_add(&run->detail, "%s failed (signal %d)%s%s", step, res->status, excerpt ? ": " : "",
                           excerpt ? excerpt : "");
        return false;
}

/* ---- Users ----------------------------------------------------------------- */

static int default_active_uids(uid_t **ret_uids, void *userdata) {
        _cleanup_(freep) uid_t *all = NULL;
        uid_t *out;
        size_t n_out = 0;
        int n;

        n = sd_get_uids(&all);
        if (n == -ENOENT)
                n = 0; /* no logind here (a container): nobody is logged in */
        if (n < 0)
                return n;
        out = calloc(n > 0 ? (size_t)n : 1, sizeof(uid_t));
        if (!out)
                return -ENOMEM;
        for (int i = 0; i < n; i++) {
                _cleanup_(freep) char *state = NULL;
                if (sd_uid_get_state(all[i], &state) < 0)
                        continue;
                if (streq(state, "active") || streq(state, "online"))
                        out[n_out++] = all[i];
        }
        *ret_uids = out;
        return (int)n_out;
}

static int user_entry_fill(const struct passwd *pw, struct user_entry *u) {
        int ngroups = 32;
        gid_t *groups = NULL;

        for (;;) {
                gid_t *ng = realloc(groups, (size_t)ngroups * sizeof(gid_t));
                int want = ngroups;
                if (!ng) {
                        free(groups);
                        return -ENOMEM;
                }
                groups = ng;
                if (getgrouplist(pw->pw_name, pw->pw_gid, groups, &want) >= 0) {
                        ngroups = want;
                        break;
                }
                if (want <= ngroups || want > 65536) {
                        free(groups);
                        return -E2BIG;
                }
                ngroups = want;
        }
        u->name = strdup(pw->pw_name);
        u->home = strdup(pw->pw_dir && pw->pw_dir[0] ? pw->pw_dir : "/");
        u->uid = pw->pw_uid;
        u->gid = pw->pw_gid;
        u->groups = groups;
        u->n_groups = (size_t)ngroups;
        if (!u->name || !u->home)
                return -ENOMEM;
        return 0;
}

static int lookup_user(const char *name, uid_t uid, bool by_name, struct user_entry *u) {
        struct passwd pw, *result = NULL;
        long size = sysconf(_SC_GETPW_R_SIZE_MAX);
        _cleanup_(freep) char *buf = NULL;
        int r;

        if (size < 16384)
                size = 16384;
        buf = malloc((size_t)size);
        if (!buf)
                return -ENOMEM;
        if (by_name)
                r = getpwnam_r(name, &pw, buf, (size_t)size, &result);
        else
                r = getpwuid_r(uid, &pw, buf, (size_t)size, &result);
        if (r != 0)
                return -r;
        if (!result)
                return -ENOENT;
        return user_entry_fill(result, u);
}

/* Fills run->users. Returns 0, or the ReturnCode to finish with (Detail
 * written). */
static uint32_t resolve_users(struct tether_scheduler *s, struct run *run) {
        _cleanup_(freep) uid_t *uids = NULL;
        int n, r;

        n = s->active_uids(&uids, s->active_uids_userdata);
        if (n < 0) {
                detail_add(&run->detail, "listing user sessions failed: %s", strerror(-n));
                return TETHER_RC_FAILED;
        }
        run->users = calloc(n > 0 ? (size_t)n : 1, sizeof(*run->users));
        if (!run->users) {
                detail_add(&run->detail, "out of memory");
                return TETHER_RC_FAILED;
        }

        if (run->param[0]) {
                const char *name = run->param;
                bool logged_in = false;
                struct user_entry *u = &run->users[0];

                if (!policy_user_name_valid(name)) {
                        detail_add(&run->detail, "user '%s' is not a valid user name", name);
                        return TETHER_RC_INVALID_TASK;
                }
                r = lookup_user(name, 0, true, u);
                if (r == -ENOENT) {
                        user_entry_clear(u);
                        *u = (struct user_entry){0};
                        detail_add(&run->detail, "user '%s' does not exist", name);
                        return TETHER_RC_INVALID_TASK;
                }
                run->n_users = 1;
                if (r < 0) {
                        detail_add(&run->detail, "user '%s': lookup failed: %s", name, strerror(-r));
                        return TETHER_RC_FAILED;
                }
                if (u->uid == 0) {
                        detail_add(&run->detail, "user '%s' is root: user policy never runs as root", name);
                        return TETHER_RC_INVALID_TASK;
                }
                for (int i = 0; i < n; i++)
                        if (uids[i] == u->uid)
                                logged_in = true;
                if (!logged_in) {
                        detail_add(&run->detail, "user '%s' has no active session", name);
                        return TETHER_RC_INVALID_TASK;
                }
                return 0;
        }

        for (int i = 0; i < n; i++) {
                struct user_entry *u = &run->users[run->n_users];
                bool dup = false;

                if (uids[i] == 0)
                        continue; /* never as root */
                for (size_t j = 0; j < run->n_users; j++)
                        if (run->users[j].uid == uids[i])
                                dup = true;
                if (dup)
                        continue;
                r = lookup_user(NULL, uids[i], false, u);
                if (r < 0 || !policy_user_name_valid(u->name)) {
                        detail_add(&run->detail, "uid %u skipped (%s)", (unsigned)uids[i],
                                   r < 0 ? strerror(-r) : "user name not usable");
                        user_entry_clear(u);
                        *u = (struct user_entry){0};
                        if (run->return_code == TETHER_RC_SUCCESS)
                                run->return_code = TETHER_RC_FAILED;
                        continue;
                }
                run->n_users++;
        }
        if (run->n_users == 0 && run->detail.len == 0)
                detail_add(&run->detail, "no user with an active session");
        return 0;
}

/* ---- Applications ---------------------------------------------------------- */

static int app_cmp_name(const void *a, const void *b) {
        return strcmp(*(char *const *)a, *(char *const *)b);
}

/* Takes p and fd (closed on failure too). */
static int add_policy_apps(struct run *run, struct policy *p, int fd) {
        struct policy **np = realloc(run->policies, (run->n_policies + 1) * sizeof(*np));
        int *nf = np ? realloc(run->policy_fds, (run->n_policies + 1) * sizeof(*nf)) : NULL;
        struct app_item *na;

        if (np)
                run->policies = np;
        if (nf)
                run->policy_fds = nf;
        if (!np || !nf) {
                policy_free(p);
                close(fd);
                return -ENOMEM;
        }
        run->policies[run->n_policies] = p;
        run->policy_fds[run->n_policies++] = fd;
        if (p->n_apps == 0)
                return 0;
        na = realloc(run->apps, (run->n_apps + p->n_apps) * sizeof(*na));
        if (!na)
                return -ENOMEM;
        run->apps = na;
        for (size_t i = 0; i < p->n_apps; i++) {
                struct app_item *it = &run->apps[run->n_apps];
                it->app = &p->apps[i];
                it->user = p->user;
                it->policy_fd = fd;
                run->n_apps++;
        }
        return 0;
}

static int load_one_policy(struct tether_scheduler *s, struct run *run, const char *user) {
        struct policy *p = NULL;
        char reason[256] = "";
        int r, fd = -1;

        r = policy_load(s->site_key, s->state_dir, user, &p, &fd, reason, sizeof(reason));
        if (r == -ENOENT)
                return 0;
        if (r < 0) {
                /* Never used: report it, and the cycle is not compliant. */
                detail_add(&run->detail, "%s%s policy refused: %s", user ? "user " : "machine",
                           user ? user : "", reason[0] ? reason : strerror(-r));
                run->app_failed = true;
                return 0;
        }
        r = add_policy_apps(run, p, fd);
        if (r >= 0 && !user) {
                /* The app-evaluation hooks get the machine policy's
                 * verified bytes, as the machine-policy hooks do. */
                int hook_fd = fcntl(fd, F_DUPFD_CLOEXEC, 3);

                if (hook_fd < 0)
                        return -errno;
                hand_policy(run, hook_fd);
        }
        return r;
}

static int load_app_policies(struct tether_scheduler *s, struct run *run) {
        _cleanup_(freep) char *user_dir = NULL;
        char **names = NULL;
        size_t n_names = 0;
        struct dirent *de;
        DIR *dir;
        int r;

        r = load_one_policy(s, run, NULL);
        if (r < 0)
                return r;
        if (asprintf(&user_dir, "%s/policies/user", s->state_dir) < 0)
                return -ENOMEM;
        dir = opendir(user_dir);
        if (!dir)
                return errno == ENOENT ? 0 : -errno;
        while ((de = readdir(dir))) {
                size_t len = strlen(de->d_name);
                char *name, **nn;

                if (len <= 4 || !streq(de->d_name + len - 4, ".xml"))
                        continue;
                name = strndup(de->d_name, len - 4);
                if (!name)
                        break;
                if (!policy_user_name_valid(name)) {
                        free(name);
                        continue;
                }
                nn = realloc(names, (n_names + 1) * sizeof(*nn));
                if (!nn) {
                        free(name);
                        break;
                }
                names = nn;
                names[n_names++] = name;
        }
        closedir(dir);
        if (n_names > 1)
                qsort(names, n_names, sizeof(*names), app_cmp_name);
        r = 0;
        for (size_t i = 0; i < n_names; i++) {
                if (r >= 0)
                        r = load_one_policy(s, run, names[i]);
                free(names[i]);
        }
        free(names);
        return r;
}

static const char *app_step_name(enum app_step step, const struct policy_app *app) {
        if (step == APP_ACT)
                return app->intent == POLICY_INTENT_REQUIRED ? "install" : "uninstall";
        return "detect";
}

static int spawn_app_step(struct tether_scheduler *s, struct run *run) {
        const struct app_item *it = &run->apps[run->app_index];
        const struct policy_app *app = it->app;
        const char *command;
        _cleanup_(freep) char *step = NULL;
        struct strv env = {0};
        char *argv[4];
        uint64_t now = now_monotonic(s), deadline;
        int r;

        if (run->app_step == APP_ACT)
                command = app->intent == POLICY_INTENT_REQUIRED ? app->install : app->uninstall;
        else
                command = app->detect;
        if (asprintf(&step, "%s%s%s%s %s", app->id, it->user ? " (user " : "", it->user ? it->user : "",
                     it->user ? ")" : "", app_step_name(run->app_step, app)) < 0)
                return -ENOMEM;

        if (lseek(it->policy_fd, 0, SEEK_SET) < 0)
                return -errno;
        deadline = now + app->timeout_sec * USEC_PER_SEC;
        if (deadline > run->deadline)
                deadline = run->deadline;

        env_common(s, run, &env);
        strv_addf(&env, "TETHER_POLICY=/dev/fd/3");
        strv_addf(&env, "TETHER_APP_ID=%s", app->id);
        strv_addf(&env, "TETHER_APP_VERSION=%s", app->version ? app->version : "");
        if (it->user)
                strv_addf(&env, "TETHER_USER=%s", it->user);
        if (env.oom) {
                strv_clear(&env);
                return -ENOMEM;
        }
        argv[0] = (char *)"/bin/sh";
        argv[1] = (char *)"-c";
        argv[2] = (char *)command;
        argv[3] = NULL;
        struct child_spec spec = {
                .step = step,
                .exec_fd = -1,
                .argv = argv,
                .envp = env.v,
                .cwd = "/",
                .policy_fd = it->policy_fd,
                .deadline_usec = deadline,
                .grace_usec = s->grace,
                .output_cap = s->output_cap,
        };
        r = child_spawn(s->event, &spec, on_child_done, s, &run->child);
        strv_clear(&env);
        return r;
}

static void app_state(struct run *run, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void app_state(struct run *run, const char *fmt, ...) {
        const struct app_item *it = &run->apps[run->app_index];
        _cleanup_(freep) char *state = NULL;
        va_list ap;
        int n;

        va_start(ap, fmt);
        n = vasprintf(&state, fmt, ap);
        va_end(ap);
        if (n < 0)
                state = NULL;
        detail_add(&run->detail, "%s%s%s%s: %s", it->app->id, it->user ? " (user " : "",
                   it->user ? it->user : "", it->user ? ")" : "", state ? state : "?");
}

/* Handles the end of an application step. Returns true when the cycle
 * must stop (its own time limit is reached). */
static bool app_result(struct tether_scheduler *s, struct run *run) {
        const struct app_item *it = &run->apps[run->app_index];
        const struct policy_app *app = it->app;
        const struct child_result *res = child_get_result(run->child);
        _cleanup_(freep) char *excerpt = output_excerpt(res);
        bool required = app->intent == POLICY_INTENT_REQUIRED;
        bool present, next_app = true;
        enum app_step step = run->app_step;

        report_output(s, run);
        if (res->timed_out) {
                app_state(run, "timed out (%s)", app_step_name(step, app));
                run->app_failed = true;
                if (now_monotonic(s) >= run->deadline) {
                        detail_add(&run->detail, "stopped: cycle time limit reached");
                        run->return_code = TETHER_RC_TIMED_OUT;
                        return true;
                }
                goto next;
        }
        if (step == APP_ACT) {
                if (res->end != CHILD_EXITED || res->status != 0) {
                        app_state(run, "failed (%s %d)%s%s", res->end == CHILD_EXITED ? "exit" : "signal",
                                  res->status, excerpt ? ": " : "", excerpt ? excerpt : "");
                        run->app_failed = true;
                        goto next;
                }
                run->app_step = APP_REDETECT;
                next_app = false;
                goto next;
        }
        if (res->end != CHILD_EXITED) {
                app_state(run, "failed (detect: signal %d)", res->status);
                run->app_failed = true;
                goto next;
        }
        present = res->status == 0;
        if (step == APP_DETECT) {
                if (required == present) {
                        app_state(run, "compliant");
                        goto next;
                }
                run->app_step = APP_ACT;
                next_app = false;
                goto next;
        }
        /* APP_REDETECT */
        if (required && present) {
                app_state(run, "installed");
        } else if (!required && !present) {
                app_state(run, "removed");
        } else {
                app_state(run, required ? "failed (not detected after install)"
                                        : "failed (still detected after uninstall)");
                run->app_failed = true;
        }
next:
        if (next_app) {
                run->app_index++;
                run->app_step = APP_DETECT;
        }
        return false;
}

/* ---- The state machine ----------------------------------------------------------- */

enum step_result {
        STEP_WAIT,
        STEP_AGAIN,
};

static int on_run_deadline(sd_event_source *source, uint64_t usec, void *userdata) {
        struct tether_scheduler *s = userdata;

        /* A running child has its own timer at the same deadline; this one
         * is for waiting on the owner (the policy fetch). */
        kick(s);
        return 0;
}

static void run_begin(struct tether_scheduler *s, struct run *run) {
        uint64_t now = now_monotonic(s);

        run->return_code = TETHER_RC_SUCCESS;
        run->deadline = now + s->time_limit[run->cycle];
        (void)sd_event_add_time(s->event, &run->deadline_source, CLOCK_MONOTONIC, run->deadline, 0,
                                on_run_deadline, s);
        log_debug("%s: starting (param '%s')", cycle_name(run->cycle), run->param);
}

static enum step_result hooks_done(struct tether_scheduler *s, struct run *run) {
        if (run->cycle == TETHER_TASK_USER_POLICY) {
                if (run->policy_fd >= 0) {
                        close(run->policy_fd);
                        run->policy_fd = -1;
                }
                run->user_index++;
                run->phase = PHASE_USER_NEXT;
                return STEP_AGAIN;
        }
        if (run->n_hooks > 0 && run->hooks_failed == 0)
                detail_add(&run->detail, "%zu hook%s ran", run->n_hooks, run->n_hooks == 1 ? "" : "s");
        run_finish(s, run, run->return_code);
        return STEP_AGAIN;
}

static enum step_result after_policy(struct tether_scheduler *s, struct run *run) {
        int r;

        if (!run->hooks_listed) {
                r = list_hooks(s, run);
                if (r < 0) {
                        if (run->detail.len == 0)
                                detail_add(&run->detail, "listing hooks failed: %s", strerror(-r));
                        run_finish(s, run, TETHER_RC_FAILED);
                        return STEP_AGAIN;
                }
        }
        run->hook_index = 0;
        run->phase = PHASE_HOOK_NEXT;
        return STEP_AGAIN;
}

static enum step_result run_step(struct tether_scheduler *s, struct run *run) {
        int r;

        if (run->cancelled) {
                if (run->child && !child_exited(run->child))
                        return STEP_WAIT;
                /* Already answered Cancelled by tether_scheduler_cancel_all(). */
                s->running = NULL;
                run_free(run);
                return STEP_AGAIN;
        }

        switch (run->phase) {
        case PHASE_START:
                run_begin(s, run);
                switch (run->cycle) {
                case TETHER_TASK_MACHINE_POLICY:
                        r = request_policy(s, run, NULL);
                        if (r < 0) {
                                detail_add(&run->detail, "machine policy: fetch failed: %s", strerror(-r));
                                run_finish(s, run, TETHER_RC_FAILED);
                        }
                        return STEP_AGAIN;
                case TETHER_TASK_USER_POLICY: {
                        uint32_t rc = resolve_users(s, run);
                        if (rc != 0) {
                                run_finish(s, run, rc);
                                return STEP_AGAIN;
                        }
                        run->user_index = 0;
                        run->phase = PHASE_USER_NEXT;
                        return STEP_AGAIN;
                }
                case TETHER_TASK_APP_EVALUATION:
                        r = load_app_policies(s, run);
                        if (r < 0) {
                                detail_add(&run->detail, "loading policies failed: %s", strerror(-r));
                                run_finish(s, run, TETHER_RC_FAILED);
                                return STEP_AGAIN;
                        }
                        if (run->n_apps == 0 && !run->app_failed)
                                detail_add(&run->detail, "no application deployments");
                        run->app_index = 0;
                        run->app_step = APP_DETECT;
                        run->phase = PHASE_APP_NEXT;
                        return STEP_AGAIN;
                default:
                        break;
                }
                run_finish(s, run, TETHER_RC_NOT_SUPPORTED);
                return STEP_AGAIN;

        case PHASE_WAIT_POLICY:
                if (!run->answer) {
                        if (now_monotonic(s) < run->deadline)
                                return STEP_WAIT;
                        detail_add(&run->detail, "%s%s: timed out waiting for the policy",
                                   run->awaiting_user ? "user " : "machine policy",
                                   run->awaiting_user ? run->awaiting_user : "");
                        run_finish(s, run, TETHER_RC_TIMED_OUT);
                        return STEP_AGAIN;
                }
                r = take_policy_answer(s, run,
                                       run->current_user ? run->current_user->name : "machine policy");
                if (r < 0) {
                        if (run->cycle == TETHER_TASK_MACHINE_POLICY) {
                                run_finish(s, run, TETHER_RC_FAILED);
                                return STEP_AGAIN;
                        }
                        /* One user's failure does not stop the others. */
                        run->return_code =
                                run->return_code == TETHER_RC_SUCCESS ? TETHER_RC_FAILED : run->return_code;
                        run->user_index++;
                        run->phase = PHASE_USER_NEXT;
                        return STEP_AGAIN;
                }
                return after_policy(s, run);

        case PHASE_USER_NEXT:
                if (run->user_index >= run->n_users) {
                        run_finish(s, run, run->return_code);
                        return STEP_AGAIN;
                }
                run->current_user = &run->users[run->user_index];
                run->hooks_failed = 0;
                r = request_policy(s, run, run->current_user->name);
                if (r < 0) {
                        detail_add(&run->detail, "%s: fetch failed: %s", run->current_user->name,
                                   strerror(-r));
                        run->return_code =
                                run->return_code == TETHER_RC_SUCCESS ? TETHER_RC_FAILED : run->return_code;
                        run->user_index++;
                        run->phase = PHASE_USER_NEXT;
                }
                return STEP_AGAIN;

        case PHASE_HOOK_NEXT:
                if (run->hook_index >= run->n_hooks)
                        return hooks_done(s, run);
                r = spawn_hook(s, run, &run->hooks[run->hook_index]);
                if (r < 0) {
                        detail_add(&run->detail, "hook %s could not start: %s",
                                   run->hooks[run->hook_index].name,
                                   r == -EBUSY ? "SIGCHLD is not blocked" : strerror(-r));
                        run->return_code =
                                run->return_code == TETHER_RC_SUCCESS ? TETHER_RC_FAILED : run->return_code;
                        run->hook_index++;
                        return STEP_AGAIN;
                }
                run->phase = PHASE_HOOK_WAIT;
                return STEP_WAIT;

        case PHASE_HOOK_WAIT:
                if (!run->child || !child_exited(run->child))
                        return STEP_WAIT;
                if (hook_result(s, run)) {
                        run_finish(s, run, TETHER_RC_TIMED_OUT);
                        return STEP_AGAIN;
                }
                run->child = child_free(run->child);
                run->hook_index++;
                run->phase = PHASE_HOOK_NEXT;
                return STEP_AGAIN;

        case PHASE_APP_NEXT:
                if (run->app_index >= run->n_apps) {
                        /* Then the cycle's hooks, as for the policy cycles. */
                        if (run->app_failed)
                                run->return_code = TETHER_RC_FAILED;
                        return after_policy(s, run);
                }
                r = spawn_app_step(s, run);
                if (r < 0) {
                        app_state(run, "failed (could not start: %s)",
                                  r == -EBUSY ? "SIGCHLD is not blocked" : strerror(-r));
                        run->app_failed = true;
                        run->app_index++;
                        run->app_step = APP_DETECT;
                        return STEP_AGAIN;
                }
                run->phase = PHASE_APP_WAIT;
                return STEP_WAIT;

        case PHASE_APP_WAIT:
                if (!run->child || !child_exited(run->child))
                        return STEP_WAIT;
                if (app_result(s, run)) {
                        run_finish(s, run, TETHER_RC_TIMED_OUT);
                        return STEP_AGAIN;
                }
                run->child = child_free(run->child);
                run->phase = PHASE_APP_NEXT;
                return STEP_AGAIN;
        }
        return STEP_WAIT;
}

static int on_kick(sd_event_source *source, void *userdata) {
        struct tether_scheduler *s = userdata;

        for (;;) {
                if (!s->running) {
                        struct run *run = s->queue;
                        if (!run)
                                return 0;
                        s->queue = run->next;
                        run->next = NULL;
                        s->running = run;
                }
                if (run_step(s, s->running) == STEP_WAIT)
                        return 0;
        }
}

/* ---- Queue ----------------------------------------------------------------- */

static bool run_key_matches(const struct run *run, enum tether_task_type cycle, const char *param) {
        if (run->cycle != cycle)
                return false;
        if (cycle == TETHER_TASK_USER_POLICY)
                return streq(run->param, param);
        return true;
}

static int enqueue(struct tether_scheduler *s, enum tether_task_type cycle, const char *task_guid,
                   const char *param, bool periodic) {
        struct run *run = NULL, **tail = &s->queue;
        struct waiter *w;

        if (!param)
                param = "";
        for (struct run *q = s->queue; q; q = q->next) {
                tail = &q->next;
                if (!run && run_key_matches(q, cycle, param))
                        run = q;
        }
        if (run && periodic && run->has_periodic)
                return 0;
        /* The channel process is not trusted to send a bounded number of
         * requests; coalescing already bounds the useful work. */
        if (!periodic && tether_scheduler_pending(s) >= TETHER_SCHEDULER_PENDING_MAX)
                return -ENOBUFS;

        w = calloc(1, sizeof(*w));
        if (!w)
                return -ENOMEM;
        w->periodic = periodic;
        w->cycle = cycle;
        if (task_guid) {
                w->task_guid = strdup(task_guid);
                if (!w->task_guid) {
                        free(w);
                        return -ENOMEM;
                }
        }
        if (!run) {
                run = calloc(1, sizeof(*run));
                if (!run) {
                        waiters_free(w);
                        return -ENOMEM;
                }
                run->cycle = cycle;
                run->policy_fd = -1;
                run->waiters_tail = &run->waiters;
                run->param = strdup(param);
                if (!run->param) {
                        waiters_free(w);
                        run_free(run);
                        return -ENOMEM;
                }
                *tail = run;
        }
        if (!run->first_guid && task_guid)
                run->first_guid = strdup(task_guid); /* best effort: only for TETHER_TASK_GUID */
        if (periodic)
                run->has_periodic = true;
        *run->waiters_tail = w;
        run->waiters_tail = &w->next;
        kick(s);
        return 0;
}

int tether_scheduler_submit(struct tether_scheduler *s, enum tether_task_type cycle, const char *task_guid,
                            const char *param) {
        if (!s || !cycle_valid((int)cycle))
                return -EINVAL;
        return enqueue(s, cycle, task_guid, param, false);
}

/* ---- Periodic runs ---------------------------------------------------------- */

static uint64_t splitmix64(uint64_t x) {
        x += 0x9e3779b97f4a7c15ULL;
        x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ULL;
        x = (x ^ (x >> 27)) * 0x94d049bb133111ebULL;
        return x ^ (x >> 31);
}

static uint64_t periodic_next(const struct tether_scheduler *s, const struct periodic *p, uint64_t now) {
        uint64_t first = s->anchor + p->offset_seed % p->interval;

        if (now < first)
                return first;
        return first + ((now - first) / p->interval + 1) * p->interval;
}

static int on_periodic(sd_event_source *source, uint64_t usec, void *userdata);

static void periodic_arm(struct tether_scheduler *s, enum tether_task_type cycle) {
        struct periodic *p = &s->periodic[cycle];
        uint64_t now = 0, accuracy;

        if (p->interval == 0) {
                p->source = sd_event_source_disable_unref(p->source);
                return;
        }
        (void)sd_event_now(s->event, CLOCK_BOOTTIME, &now);
        p->next = periodic_next(s, p, now);
        accuracy = p->interval / 100;
        if (accuracy < USEC_PER_SEC)
                accuracy = USEC_PER_SEC;
        if (p->source) {
                (void)sd_event_source_set_time(p->source, p->next);
                (void)sd_event_source_set_time_accuracy(p->source, accuracy);
                (void)sd_event_source_set_enabled(p->source, SD_EVENT_ONESHOT);
        } else if (sd_event_add_time(s->event, &p->source, CLOCK_BOOTTIME, p->next, accuracy, on_periodic,
                                     s) < 0) {
                log_debug("%s: cannot arm the periodic timer", cycle_name(cycle));
                p->source = NULL;
        }
}

static int on_periodic(sd_event_source *source, uint64_t usec, void *userdata) {
        struct tether_scheduler *s = userdata;

        for (int c = TETHER_TASK_MACHINE_POLICY; c <= TETHER_TASK_TYPE_MAX; c++) {
                if (s->periodic[c].source != source)
                        continue;
                (void)enqueue(s, (enum tether_task_type)c, NULL, NULL, true);
                periodic_arm(s, (enum tether_task_type)c);
        }
        return 0;
}

static void periodic_update(struct tether_scheduler *s, const struct policy *machine) {
        for (int c = TETHER_TASK_MACHINE_POLICY; c <= TETHER_TASK_TYPE_MAX; c++) {
                uint64_t interval = s->option_interval[c];

                if (machine && machine->interval_sec[c] > 0)
                        interval = machine->interval_sec[c] * USEC_PER_SEC;
                if (interval == s->periodic[c].interval && (interval == 0 || s->periodic[c].source))
                        continue;
                s->periodic[c].interval = interval;
                periodic_arm(s, (enum tether_task_type)c);
        }
}

int tether_scheduler_next_run(const struct tether_scheduler *s, enum tether_task_type cycle,
                              uint64_t *ret_usec, uint64_t *ret_interval_usec) {
        if (!s || !cycle_valid((int)cycle))
                return -EINVAL;
        if (s->periodic[cycle].interval == 0 || !s->periodic[cycle].source)
                return -ENOENT;
        if (ret_usec)
                *ret_usec = s->periodic[cycle].next;
        if (ret_interval_usec)
                *ret_interval_usec = s->periodic[cycle].interval;
        return 0;
}

/* ---- Public ---------------------------------------------------------------- */

int tether_scheduler_new(sd_event *event, const struct tether_scheduler_options *options,
                         tether_cycle_done_fn done, tether_policy_request_fn policy_request, void *userdata,
                         struct tether_scheduler **ret) {
        struct tether_scheduler *s;
        struct policy *machine = NULL;
        uint64_t seed;
        int r;

        if (!event || !options || !options->state_dir || !ret)
                return -EINVAL;
        s = calloc(1, sizeof(*s));
        if (!s)
                return -ENOMEM;
        s->event = sd_event_ref(event);
        s->state_dir = strdup(options->state_dir);
        s->cycles_dir = strdup_or_null(options->cycles_dir);
        if (!s->state_dir || (options->cycles_dir && !s->cycles_dir)) {
                r = -ENOMEM;
                goto fail;
        }
        s->site_key = options->site_key;
        s->grace = options->kill_grace_usec ? options->kill_grace_usec : DEFAULT_GRACE_USEC;
        s->output_cap = options->output_cap ? options->output_cap : DEFAULT_OUTPUT_CAP;
        s->own_uid = geteuid();
        s->done = done;
        s->policy_request = policy_request;
        s->userdata = userdata;
        s->active_uids = default_active_uids;
        for (int c = TETHER_TASK_MACHINE_POLICY; c <= TETHER_TASK_TYPE_MAX; c++) {
                s->time_limit[c] = options->time_limit_usec[c];
                if (s->time_limit[c] == 0)
                        s->time_limit[c] =
                                tether_task_type_info((uint32_t)c)->fallback_limit_sec * USEC_PER_SEC;
                s->option_interval[c] = options->interval_usec[c];
        }

        r = sd_event_add_defer(event, &s->kick, on_kick, s);
        if (r < 0)
                goto fail;
        r = sd_event_source_set_enabled(s->kick, SD_EVENT_OFF);
        if (r < 0)
                goto fail;

        seed = options->random_seed;
        if (seed == 0 && getrandom(&seed, sizeof(seed), 0) != sizeof(seed)) {
                r = -errno;
                goto fail;
        }
        for (int c = TETHER_TASK_MACHINE_POLICY; c <= TETHER_TASK_TYPE_MAX; c++)
                s->periodic[c].offset_seed = splitmix64(seed + (uint64_t)c);
        r = sd_event_now(event, CLOCK_BOOTTIME, &s->anchor);
        if (r < 0)
                goto fail;
        /* The stored machine policy's Intervals apply from the start, if it
         * still verifies. */
        (void)policy_load(s->site_key, s->state_dir, NULL, &machine, NULL, NULL, 0);
        periodic_update(s, machine);
        policy_free(machine);

        *ret = s;
        return 0;

fail:
        tether_scheduler_free(s);
        return r;
}

struct tether_scheduler *tether_scheduler_free(struct tether_scheduler *s) {
        if (!s)
                return NULL;
        while (s->queue) {
                struct run *next = s->queue->next;
                run_free(s->queue);
                s->queue = next;
        }
        run_free(s->running);
        s->running = NULL;
        for (int c = 0; c <= TETHER_TASK_TYPE_MAX; c++)
                s->periodic[c].source = sd_event_source_disable_unref(s->periodic[c].source);
        s->kick = sd_event_source_disable_unref(s->kick);
        sd_event_unref(s->event);
        free(s->state_dir);
        free(s->cycles_dir);
        free(s);
        return NULL;
}

int tether_scheduler_policy(struct tether_scheduler *s, const char *user, enum tether_policy_result result,
                            const uint8_t *body, size_t len, const uint8_t *sig, size_t sig_len, int error) {
        struct run *run;
        struct policy_answer *a;

        if (!s)
                return -EINVAL;
        run = s->running;
        if (!run || run->cancelled || run->phase != PHASE_WAIT_POLICY || run->answer)
                return -ESRCH;
        if ((user == NULL) != (run->awaiting_user == NULL) || (user && !streq(user, run->awaiting_user)))
                return -ESRCH;
        if (result < TETHER_POLICY_NEW || result > TETHER_POLICY_ERROR)
                return -EINVAL;

        a = calloc(1, sizeof(*a));
        if (!a)
                return -ENOMEM;
        a->result = result;
        a->error = error;
        if (result == TETHER_POLICY_NEW) {
                if (len > POLICY_MAX_BYTES) {
                        a->result = TETHER_POLICY_ERROR;
                        a->error = -EFBIG;
                } else {
                        a->body = len ? malloc(len) : NULL;
                        a->sig = sig_len ? malloc(sig_len) : NULL;
                        if ((len && !a->body) || (sig_len && !a->sig)) {
                                policy_answer_free(a);
                                return -ENOMEM;
                        }
                        if (len)
                                memcpy(a->body, body, len);
                        if (sig_len)
                                memcpy(a->sig, sig, sig_len);
                        a->len = len;
                        a->sig_len = sig_len;
                }
        }
        run->answer = a;
        kick(s);
        return 0;
}

void tether_scheduler_cancel_all(struct tether_scheduler *s) {
        struct waiter *answers = NULL, **answers_tail = &answers;

        if (!s)
                return;
        /* Collect first, answer last: the callbacks may submit again. */
        while (s->queue) {
                struct run *r = s->queue;
                s->queue = r->next;
                *answers_tail = r->waiters;
                while (*answers_tail)
                        answers_tail = &(*answers_tail)->next;
                r->waiters = NULL;
                run_free(r);
        }
        if (s->running && !s->running->cancelled) {
                struct run *r = s->running;
                *answers_tail = r->waiters;
                r->waiters = NULL;
                r->cancelled = true;
                /* The run stays until its child is gone, so nothing new
                 * starts beside it. */
                if (r->child)
                        child_terminate(r->child);
                kick(s);
        }
        while (answers) {
                struct waiter *next = answers->next;
                if (s->done)
                        s->done(s, answers->cycle, answers->task_guid, TETHER_RC_CANCELLED, "cancelled",
                                s->userdata);
                free(answers->task_guid);
                free(answers);
                answers = next;
        }
}

unsigned tether_scheduler_pending(const struct tether_scheduler *s) {
        unsigned n = 0;

        if (!s)
                return 0;
        for (const struct run *r = s->queue; r; r = r->next)
                for (const struct waiter *w = r->waiters; w; w = w->next)
                        n++;
        if (s->running)
                for (const struct waiter *w = s->running->waiters; w; w = w->next)
                        n++;
        return n;
}

void tether_scheduler_set_site_key(struct tether_scheduler *s, const struct tether_key *key) {
        s->site_key = key;
}

void tether_scheduler_set_output_handler(struct tether_scheduler *s, tether_child_output_fn fn,
                                         void *userdata) {
        s->output_fn = fn;
        s->output_userdata = userdata;
}

void tether_scheduler_set_session_query(struct tether_scheduler *s, tether_active_uids_fn fn,
                                        void *userdata) {
        s->active_uids = fn ? fn : default_active_uids;
        s->active_uids_userdata = fn ? userdata : NULL;
}
