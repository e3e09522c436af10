/* SPDX-License-Identifier: Apache-2.0 */
#include "agent/schedd.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <sys/socket.h>
#include <unistd.h>

#include <systemd/sd-daemon.h>

#include "agent/config.h"
#include "agent/dirs.h"
#include "agent/identity.h"
#include "agent/privsep.h"
#include "common/cleanup.h"
#include "common/fsutil.h"
#include "common/log.h"
#include "common/strutil.h"
#include "scheduler/scheduler.h"
#include "transport/message.h"
#include "transport/rotation.h"
#include "transport/sign.h"

#define USEC_PER_SEC 1000000ULL
/* Tasks remembered by TaskGUID, running or done (a ring, oldest replaced):
 * enough for every task a channel process can have in flight when it dies. */
#define MEMO_MAX 256
/* RUNs held while the site key is not known yet. The channel process is
 * not trusted to send a bounded number; the scheduler's own queue has the
 * same kind of bound (TETHER_SCHEDULER_PENDING_MAX). */
#define QUEUED_RUNS_MAX 64u

/* A RUN that came before the site key was known. */
struct queued_run {
        struct queued_run *next;
        uint32_t cycle;
        char task_guid[TETHER_GUID_LEN];
        char *param;
};

/* A task the channel process handed over: running, or done with its answer. */
struct task_memo {
        char task_guid[TETHER_GUID_LEN]; /* "" when the slot is free */
        bool done;
        uint32_t cycle;
        uint32_t return_code;
        char *detail; /* owned, when done */
};

struct schedd {
        sd_event *event;
        const struct tether_config *config;
        struct tether_scheduler *scheduler;
        struct tether_key *site_key; /* serial 1 */
        /* Site key rotation: the chain verified from site_key by this
         * process (never taken on the channel process's word), its own
         * copy at <state_dir>-root/site-chain, and the key that verifies now. */
        struct tether_site_chain *chain;
        struct tether_key *verifier;
        char *chain_path;

        int fd;
        sd_event_source *io;
        uint8_t *buf;

        sd_event_source *ping_timer;
        uint64_t ping_interval_usec;
        uint64_t last_pong_usec;
        uint64_t seq;
        bool ready;
        bool watchdog_on;
        bool stopping;

        struct queued_run *queue, **queue_tail;

        struct task_memo memo[MEMO_MAX];
        size_t memo_next;
        /* The policy the running cycle waits for, until its answer comes:
         * asked again of a new channel process. */
        bool policy_pending;
        char policy_user[PRIV_USER_MAX];
        bool watchdog_suspended;
        unsigned n_queued;
};

static int send_msg(struct schedd *s, int r, uint8_t *buf, size_t len) {
        if (r < 0)
                return r;
        r = s->fd >= 0 ? priv_send(s->fd, buf, len) : -ENOTCONN;
        free(buf);
        return r;
}

static struct task_memo *memo_find(struct schedd *s, const char *guid) {
        for (size_t i = 0; i < MEMO_MAX; i++)
                if (s->memo[i].task_guid[0] && strcmp(s->memo[i].task_guid, guid) == 0)
                        return &s->memo[i];
        return NULL;
}

static void memo_clear(struct task_memo *m) {
        free(m->detail);
        *m = (struct task_memo){0};
}

static void memo_add(struct schedd *s, const char *guid, uint32_t cycle) {
        struct task_memo *m = &s->memo[s->memo_next];

        memo_clear(m);
        strscpy(m->task_guid, sizeof(m->task_guid), guid);
        m->cycle = cycle;
        s->memo_next = (s->memo_next + 1) % MEMO_MAX;
}

static int send_done(struct schedd *s, uint32_t cycle, const char *guid, uint32_t rc, const char *detail) {
        uint8_t *buf = NULL;
        size_t len;
        int r = priv_build_done(cycle, guid, rc, detail, &buf, &len);
        return send_msg(s, r, buf, len);
}

/* Keeps a task's answer, so that a new channel process can get it again. */
static void memo_done(struct schedd *s, const char *guid, uint32_t cycle, uint32_t rc, const char *detail) {
        struct task_memo *m = memo_find(s, guid);

        if (!m) {
                memo_add(s, guid, cycle);
                m = memo_find(s, guid);
        }
        free(m->detail);
        m->detail = strdup(detail ? detail : "");
        m->done = m->detail != NULL;
        m->return_code = rc;
}

static void cycle_done(struct tether_scheduler *sch, enum tether_task_type cycle, const char *task_guid,
                       uint32_t return_code, const char *detail, void *userdata) {
        struct schedd *s = userdata;
        uint8_t *buf = NULL;
        size_t len;
        int r;

        if (s->stopping) {
                /* Cut short by the shutdown: no answer, so the task stays
                 * pending in the spool and runs again after the restart. */
                log_info("Cycle %s for task %s stopped by the shutdown; it runs again after the restart",
                         tether_task_type_cli_name(cycle), task_guid ? task_guid : "(local)");
                return;
        }
        if (task_guid)
                memo_done(s, task_guid, (uint32_t)cycle, return_code, detail);
        if (s->fd < 0) {
                log_info("Cycle %s for task %s finished while the channel process restarts; its answer "
                         "waits for the new one",
                         tether_task_type_cli_name(cycle), task_guid ? task_guid : "(local)");
                return;
        }
        r = priv_build_done((uint32_t)cycle, task_guid ? task_guid : "", return_code, detail, &buf, &len);
        r = send_msg(s, r, buf, len);
        if (r < 0)
                log_warning_errno(r,
                                  "Cannot pass the result of task %s to the channel process now (%m); "
                                  "it is passed again when asked",
                                  task_guid ? task_guid : "(local)");
}

static int send_policy_request(struct schedd *s) {
        uint8_t *buf = NULL;
        size_t len;
        int r = priv_build_policy_request(s->policy_user, &buf, &len);
        return send_msg(s, r, buf, len);
}

static int policy_request(struct tether_scheduler *sch, const char *user, void *userdata) {
        struct schedd *s = userdata;
        int r;

        if (strscpy(s->policy_user, sizeof(s->policy_user), user ? user : "") < 0)
                return -EINVAL;
        s->policy_pending = true;
        r = send_policy_request(s);
        /* Without a channel process the request waits for the next one. */
        return r == -ENOTCONN ? 0 : r;
}

static void child_output(struct tether_scheduler *sch, enum tether_task_type cycle, const char *step,
                         int status, const char *output, size_t len, uint64_t total, void *userdata) {
        if (len == 0)
                log_debug("%s: %s exited with %d, no output", tether_task_type_cli_name(cycle), step,
                          status);
        else
                log_info("%s: %s exited with %d, output: %.*s%s", tether_task_type_cli_name(cycle), step,
                         status, (int)len, output, total > len ? " [cut]" : "");
}

static uint64_t seed_from_machine(const struct tether_config *c) {
        char hash[65];
        uint64_t seed = 0;

        /* The per-device schedule offset stays the same across restarts. */
        if (identity_machine_hash(c->machine_id_file, hash) < 0)
                return 0;
        for (int i = 0; i < 16; i++) {
                char ch = hash[i];
                seed = seed << 4 | (uint64_t)(ch >= 'a' ? ch - 'a' + 10 : ch - '0');
        }
        return seed ? seed : 1;
}

/* The verifying key for now: rebuilt when the current key or the overlap
 * changes; the first time a new key is current starts the overlap of the
 * ones before it (as the channel process counts from its first confirm). */
static const struct tether_key *site_verifier(struct schedd *s) {
        time_t now = time(NULL);
        struct tether_key *v = NULL;
        size_t cur;

        if (!s->chain)
                return s->site_key;
        cur = tether_site_chain_current(s->chain, now);
        if (tether_site_chain_mark_confirm(s->chain, cur, now) && cur > 0 &&
            tether_site_chain_save(s->chain, s->chain_path) < 0)
                log_warning("Cannot record the start of site key serial %zu in '%s'", cur + 1,
                            s->chain_path);
        if (tether_site_chain_verifier(s->chain, now, TETHER_SITE_KEY_OVERLAP_SECONDS, &v) < 0)
                return s->verifier ? s->verifier : s->site_key;
        tether_key_free(s->verifier);
        s->verifier = v;
        if (s->scheduler)
                tether_scheduler_set_site_key(s->scheduler, v);
        return v;
}

/* site_key became known: the chain this process stored for it, each link
 * verified again. */
static void load_chain(struct schedd *s) {
        struct tether_site_chain *chain = NULL;
        char why[256] = "";
        int r;

        r = tether_site_chain_new(s->site_key, &chain);
        if (r < 0) {
                log_error_errno(r, "Cannot hold the site key chain: %m");
                return;
        }
        r = tether_site_chain_load(chain, s->chain_path, time(NULL), why);
        if (r < 0 && r != -ENOENT)
                log_warning("Site key chain '%s': %s; keeping the %zu keys before it", s->chain_path,
                            why[0] ? why : strerror(-r), tether_site_chain_len(chain));
        tether_site_chain_free(s->chain);
        s->chain = chain;
}

/* The channel process passed the chain it took from a SIGNIN_CONFIRM. */
static void handle_site_chain(struct schedd *s, const uint8_t *text, size_t len) {
        struct tether_site_chain *next = NULL;
        char why[256] = "";
        size_t before;
        int r;

        if (!s->chain) {
                log_warning("The channel process sent a site key chain before any site key; ignoring it");
                return;
        }
        before = tether_site_chain_len(s->chain);
        r = tether_site_chain_copy(s->chain, &next);
        if (r >= 0)
                r = tether_site_chain_parse(next, (const char *)text, len, false, time(NULL), why);
        if (r == -EBADMSG)
                log_error("The site key chain from the channel process is refused from serial %zu on: %s",
                          tether_site_chain_len(next) + 1, why);
        else if (r < 0)
                log_error_errno(r, "Cannot take the site key chain: %m");
        if (next && tether_site_chain_len(next) > before) {
                r = tether_site_chain_save(next, s->chain_path);
                if (r < 0) {
                        log_error_errno(r, "Cannot store the site key chain in '%s'; not using it: %m",
                                        s->chain_path);
                } else {
                        log_info("Scheduler trusts the site key chain up to serial %zu",
                                 tether_site_chain_len(next));
                        tether_site_chain_free(s->chain);
                        s->chain = TAKE_PTR(next);
                        (void)site_verifier(s);
                }
        }
        tether_site_chain_free(next);
}

static int scheduler_create(struct schedd *s) {
        struct tether_scheduler_options o = {0};
        _cleanup_(freep) char *root_state = NULL;
        int r;

        /* Root's own directory (agent/dirs.h), never the channel's. */
        r = dirs_root_state_path(s->config, &root_state);
        if (r < 0)
                return log_error_errno(r, "Cannot start the scheduler: %m");
        /* Checked again here: a reload may have moved state_dir. */
        r = geteuid() == 0 ? dirs_prepare_root_state(root_state) : 0;
        if (r < 0)
                return r;
        o.state_dir = root_state;
        o.cycles_dir = s->config->cycles_dir;
        o.site_key = site_verifier(s);
        for (int i = 1; i <= TETHER_TASK_TYPE_MAX; i++) {
                o.time_limit_usec[i] = s->config->timeout_usec[i];
                o.interval_usec[i] = s->config->enabled[i] ? s->config->interval_usec[i] : 0;
        }
        o.kill_grace_usec = s->config->kill_grace_usec;
        o.output_cap = (size_t)s->config->output_cap;
        o.random_seed = seed_from_machine(s->config);
        r = tether_scheduler_new(s->event, &o, cycle_done, policy_request, s, &s->scheduler);
        if (r < 0)
                return log_error_errno(r, "Cannot start the scheduler: %m");
        tether_scheduler_set_output_handler(s->scheduler, child_output, s);
        return 0;
}

static void refuse(struct schedd *s, uint32_t cycle, const char *task_guid, const char *why) {
        uint8_t *buf = NULL;
        size_t len;
        int r;

        log_warning("Refusing cycle %s for task %s from the channel process: %s",
                    tether_task_type_cli_name(cycle), task_guid[0] ? task_guid : "(local)", why);
        if (task_guid[0])
                memo_done(s, task_guid, cycle, TETHER_RC_FAILED, why);
        r = priv_build_done(cycle, task_guid, TETHER_RC_FAILED, why, &buf, &len);
        (void)send_msg(s, r, buf, len);
}

static void submit(struct schedd *s, uint32_t cycle, const char *task_guid, const char *param) {
        int r = tether_scheduler_submit(s->scheduler, (enum tether_task_type)cycle,
                                        task_guid[0] ? task_guid : NULL, param);
        if (r == -ENOBUFS)
                refuse(s, cycle, task_guid, "too many requests pending in the scheduler");
        else if (r < 0) {
                log_error_errno(r, "Cannot queue cycle %s: %m", tether_task_type_cli_name(cycle));
                refuse(s, cycle, task_guid, "the scheduler refused the request");
        }
}

/* A RUN for a task already known: a new channel process re-sends RUN for
 * every task it has no answer for. Returns true when it was handled. */
static bool run_known(struct schedd *s, const char *task_guid) {
        struct task_memo *m = task_guid[0] ? memo_find(s, task_guid) : NULL;

        if (!m)
                return false;
        if (!m->done) {
                log_info("Task %s is already running; its answer follows when it is done", task_guid);
                return true;
        }
        log_info("Task %s is done: passing its answer (%s) again", task_guid,
                 tether_return_code_name(m->return_code));
        (void)send_done(s, m->cycle, task_guid, m->return_code, m->detail);
        return true;
}

static int queue_run(struct schedd *s, uint32_t cycle, const char *task_guid, const char *param) {
        struct queued_run *q;

        if (s->n_queued >= QUEUED_RUNS_MAX) {
                refuse(s, cycle, task_guid, "too many requests waiting for the site key");
                return 0;
        }
        q = calloc(1, sizeof(*q));
        if (!q)
                return -ENOMEM;
        q->cycle = cycle;
        strscpy(q->task_guid, sizeof(q->task_guid), task_guid);
        q->param = strdup(param);
        if (!q->param) {
                free(q);
                return -ENOMEM;
        }
        *s->queue_tail = q;
        s->queue_tail = &q->next;
        s->n_queued++;
        log_info("Cycle %s waits for the site key to be known", tether_task_type_cli_name(cycle));
        return 0;
}

static void flush_queue(struct schedd *s) {
        while (s->queue) {
                struct queued_run *q = s->queue;
                s->queue = q->next;
                submit(s, q->cycle, q->task_guid, q->param);
                free(q->param);
                free(q);
        }
        s->queue_tail = &s->queue;
        s->n_queued = 0;
}

/* The scheduler process decides itself whether to trust a key that the
 * channel process learned: it must be the configured one, match the
 * configured fingerprint, or (TOFU) be the first one. */
static void handle_site_key(struct schedd *s, const uint8_t *der, size_t len) {
        struct tether_key *key = NULL;
        char fp[TETHER_FINGERPRINT_LEN] = "";
        int r;

        r = tether_key_from_spki_der(der, len, &key);
        if (r < 0) {
                log_error_errno(r, "The channel process sent an unusable site key, ignoring: %m");
                return;
        }
        if (s->site_key) {
                if (!tether_key_equal(s->site_key, key))
                        log_error("The channel process sent a different site key than the trusted one, "
                                  "ignoring it");
                tether_key_free(key);
                return;
        }
        (void)tether_key_fingerprint(key, fp);
        if (s->config->site_key_fingerprint && strcmp(fp, s->config->site_key_fingerprint) != 0) {
                log_error("The channel process sent site key %s, which is not the configured fingerprint, "
                          "ignoring it",
                          fp);
                tether_key_free(key);
                return;
        }
        if (!s->config->site_key_fingerprint && !s->config->trust_on_first_use) {
                tether_key_free(key);
                return;
        }
        s->site_key = key;
        log_info("Scheduler trusts site key %s", fp);
        load_chain(s);
        if (scheduler_create(s) >= 0)
                flush_queue(s);
}

static void set_watchdog(struct schedd *s, bool on) {
        if (on == s->watchdog_on)
                return;
        s->watchdog_on = on;
        (void)sd_event_set_watchdog(s->event, on);
        if (!on) {
                s->watchdog_suspended = true;
                log_error("The channel process stopped answering: watchdog notifications suspended");
        } else if (s->watchdog_suspended) {
                /* Only after a suspension: the first start has nothing to resume. */
                s->watchdog_suspended = false;
                log_info("The channel process answers again: watchdog notifications resumed");
        }
}

/* RUN: a task for the scheduler, unless it is known or we are stopping. */
static int handle_run(struct schedd *s, const struct priv_msg *m) {
        _cleanup_(freep) char *param = strndup((const char *)m->data, m->data_len);
        int r;

        if (!param)
                return -ENOMEM;
        if (s->stopping || run_known(s, m->run.task_guid))
                return 0;
        if (m->run.task_guid[0])
                memo_add(s, m->run.task_guid, m->run.cycle);
        if (!s->scheduler) {
                r = queue_run(s, m->run.cycle, m->run.task_guid, param);
                return r < 0 ? r : 0;
        }
        submit(s, m->run.cycle, m->run.task_guid, param);
        return 0;
}

/* POLICY: the answer to the scheduler's request. */
static void handle_policy(struct schedd *s, const struct priv_msg *m) {
        int r;

        if (s->policy_pending && strcmp(m->policy.user, s->policy_user) == 0)
                s->policy_pending = false;
        if (!s->scheduler)
                return;
        (void)site_verifier(s);
        r = tether_scheduler_policy(s->scheduler, m->policy.user[0] ? m->policy.user : NULL,
                                    (enum tether_policy_result)m->policy.result, m->data, m->data_len,
                                    m->data2, m->data2_len, m->policy.error);
        if (r < 0 && r != -ESRCH)
                log_warning_errno(r, "Policy answer not taken, ignoring: %m");
}

static int priv_io(sd_event_source *src, int fd, uint32_t revents, void *userdata) {
        struct schedd *s = userdata;
        struct priv_msg m;
        size_t k;
        int r;

        r = priv_recv(fd, PRIV_SIDE_SCHEDULER, s->buf, &m, &k);
        if (r == 0)
                return 0;
        if (r == -EPIPE) {
                if (s->stopping)
                        return sd_event_exit(s->event, 0);
                /* The supervisor (tetherd.c) learns of the death from
                 * SIGCHLD and starts a new channel process. */
                log_warning("The channel process went away");
                schedd_detach(s);
                return 0;
        }
        if (r < 0) {
                /* The unprivileged side sent something the protocol does not
                 * allow: it is not trusted any further. Closing the socket
                 * ends it (it stops when the scheduler goes away), and the
                 * supervisor starts a fresh one. */
                log_error("Invalid message from the channel process (%zu bytes); dropping it", k);
                schedd_detach(s);
                return 0;
        }
        switch (m.type) {
        case PRIV_RUN:
                return handle_run(s, &m);
        case PRIV_POLICY:
                handle_policy(s, &m);
                break;
        case PRIV_SITE_KEY:
                handle_site_key(s, m.data, m.data_len);
                break;
        case PRIV_SITE_CHAIN:
                handle_site_chain(s, m.data, m.data_len);
                break;
        case PRIV_PING: {
                uint8_t *buf = NULL;
                size_t len;
                r = priv_build_ping(PRIV_PONG, m.ping.seq, &buf, &len);
                (void)send_msg(s, r, buf, len);
                break;
        }
        case PRIV_PONG:
                (void)sd_event_now(s->event, CLOCK_MONOTONIC, &s->last_pong_usec);
                if (!s->ready) {
                        s->ready = true;
                        (void)sd_notify(0, "READY=1");
                        log_info("Both halves running: ready");
                }
                if (s->ping_interval_usec > 0)
                        set_watchdog(s, true);
                break;
        case PRIV_STATUS: {
                char text[PRIV_STATUS_MAX + 1];
                memcpy(text, m.data, m.data_len);
                text[m.data_len] = 0;
                (void)sd_notifyf(0, "STATUS=%s", text);
                break;
        }
        default:
                break;
        }
        return 0;
}

static int send_ping(struct schedd *s) {
        uint8_t *buf = NULL;
        size_t len;
        int r = priv_build_ping(PRIV_PING, ++s->seq, &buf, &len);
        return send_msg(s, r, buf, len);
}

static int ping_tick(sd_event_source *src, uint64_t usec, void *userdata) {
        struct schedd *s = userdata;

        /* Two missed answers and the watchdog stops being fed, so that
         * systemd restarts a service whose halves no longer talk. */
        if (s->ready && s->fd >= 0 &&
            usec > s->last_pong_usec + 2 * s->ping_interval_usec + s->ping_interval_usec / 2)
                set_watchdog(s, false);
        if (s->fd >= 0)
                (void)send_ping(s);
        (void)sd_event_source_set_time(src, usec + s->ping_interval_usec);
        return 0;
}

int schedd_new(sd_event *event, const struct tether_config *config, int priv_fd, struct schedd **ret) {
        _cleanup_(freep) char *root_state = NULL;
        struct schedd *s;
        uint64_t wd = 0;
        int r;

        s = calloc(1, sizeof(*s));
        if (!s) {
                close(priv_fd);
                return -ENOMEM;
        }
        s->event = sd_event_ref(event);
        s->config = config;
        s->fd = -1;
        s->queue_tail = &s->queue;
        s->buf = malloc(PRIV_MSG_MAX);
        /* Root's own directory: the channel user must not be able to
         * remove or replace what root trusts (agent/dirs.h). */
        r = dirs_root_state_path(config, &root_state);
        if (r < 0)
                goto fail;
        s->chain_path = path_join(root_state, "site-chain");
        if (!s->buf || !s->chain_path) {
                r = -ENOMEM;
                goto fail;
        }
        if (config->site_key) {
                r = tether_key_load_public(config->site_key, &s->site_key);
                if (r < 0) {
                        log_error_errno(r, "Cannot load the site key '%s': %m", config->site_key);
                        goto fail;
                }
                load_chain(s);
                r = scheduler_create(s);
                if (r < 0)
                        goto fail;
        }
        if (priv_fd >= 0) {
                s->fd = priv_fd;
                priv_fd = -1;
                r = sd_event_add_io(event, &s->io, s->fd, EPOLLIN, priv_io, s);
                if (r < 0)
                        goto fail;
        }
        /* Pings only serve the watchdog: without one, an idle agent does
         * not wake up for them. */
        if (sd_watchdog_enabled(0, &wd) > 0 && wd > 0) {
                s->ping_interval_usec = wd / 4;
                if (s->ping_interval_usec < 100000)
                        s->ping_interval_usec = 100000;
                r = sd_event_add_time_relative(event, &s->ping_timer, CLOCK_MONOTONIC, s->ping_interval_usec,
                                               0, ping_tick, s);
                if (r < 0)
                        goto fail;
                (void)sd_event_source_set_enabled(s->ping_timer, SD_EVENT_ON);
        }
        *ret = s;
        return 0;
fail:
        if (priv_fd >= 0)
                close(priv_fd);
        schedd_free(s);
        return r;
}

struct schedd *schedd_free(struct schedd *s) {
        if (!s)
                return NULL;
        s->scheduler = tether_scheduler_free(s->scheduler);
        tether_key_free(s->site_key);
        tether_site_chain_free(s->chain);
        tether_key_free(s->verifier);
        free(s->chain_path);
        sd_event_source_disable_unref(s->io);
        sd_event_source_disable_unref(s->ping_timer);
        if (s->fd >= 0)
                close(s->fd);
        while (s->queue) {
                struct queued_run *q = s->queue;
                s->queue = q->next;
                free(q->param);
                free(q);
        }
        for (size_t i = 0; i < MEMO_MAX; i++)
                memo_clear(&s->memo[i]);
        free(s->buf);
        sd_event_unref(s->event);
        free(s);
        return NULL;
}

int schedd_start(struct schedd *s) {
        return s->fd >= 0 ? send_ping(s) : 0;
}

int schedd_attach(struct schedd *s, int priv_fd) {
        int r;

        schedd_detach(s);
        s->fd = priv_fd;
        r = sd_event_add_io(s->event, &s->io, priv_fd, EPOLLIN, priv_io, s);
        if (r < 0) {
                schedd_detach(s);
                return r;
        }
        /* The new process gets the same grace as the first one. */
        (void)sd_event_now(s->event, CLOCK_MONOTONIC, &s->last_pong_usec);
        if (s->policy_pending) {
                log_info("Asking the new channel process for the %s policy the running cycle waits for",
                         s->policy_user[0] ? s->policy_user : "machine");
                (void)send_policy_request(s);
        }
        return send_ping(s);
}

void schedd_detach(struct schedd *s) {
        s->io = sd_event_source_disable_unref(s->io);
        if (s->fd >= 0)
                close(s->fd);
        s->fd = -1;
        /* The root process is alive and restarting its other half: that is
         * no reason for systemd to restart everything. */
        if (s->ping_interval_usec > 0 && !s->stopping)
                set_watchdog(s, true);
}

void schedd_stop(struct schedd *s) {
        if (s->stopping)
                return;
        s->stopping = true;
        (void)sd_notify(0, "STOPPING=1");
        if (s->scheduler)
                tether_scheduler_cancel_all(s->scheduler);
}

int schedd_reload(struct schedd *s, const struct tether_config *config) {
        s->config = config;
        log_set_max_level(config->log_level);
        if (!s->scheduler)
                return 0;
        if (tether_scheduler_pending(s->scheduler) > 0) {
                log_notice("Configuration reloaded; cycle settings apply once the running cycles are done "
                           "(at the next reload or restart)");
                return 0;
        }
        s->scheduler = tether_scheduler_free(s->scheduler);
        log_info("Configuration reloaded: cycle settings applied");
        return scheduler_create(s);
}
