/* SPDX-License-Identifier: Apache-2.0 */
#include "agent/channeld.h"
#include "agent/channeld-internal.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <json-c/json.h>

#include "agent/channel.h"
#include "agent/config.h"
#include "agent/control.h"
#include "common/fsutil.h"
#include "agent/identity.h"
#include "agent/privsep.h"
#include "agent/pushstats.h"
#include "agent/session.h"
#include "agent/spool.h"
#include "agent/trust.h"
#include "transport/rotation.h"
#include "common/cleanup.h"
#include "common/log.h"
#include "common/strutil.h"
#include "transport/message.h"
#include "transport/policy-answer.h"
#include "transport/sign.h"

static int priv_send_buf(struct channeld *c, int r, uint8_t *buf, size_t len) {
        if (r < 0)
                return r;
        r = priv_send(c->priv_fd, buf, len);
        free(buf);
        return r;
}

#define STATUS_DELAY_USEC (100ULL * 1000ULL)

static int status_flush(sd_event_source *s, uint64_t usec, void *userdata) {
        struct channeld *c = userdata;
        uint8_t *buf = NULL;
        size_t len;
        int r;

        c->status_timer = sd_event_source_disable_unref(c->status_timer);
        if (strcmp(c->status_next, c->status) == 0)
                return 0;
        strscpy(c->status, sizeof(c->status), c->status_next);
        r = priv_build_status(c->status, &buf, &len);
        r = priv_send_buf(c, r, buf, len);
        if (r < 0)
                log_debug_errno(r, "Cannot pass the status line on: %m");
        return 0;
}

/* "host:port" of the MP address tried or connected now: one of [mp] host's
 * list (PROTOCOL-v1 7.4). */
void mp_peer(struct channeld *c, char *buf, size_t size) {
        uint16_t port = strcmp(c->transport, "https") == 0 ? c->config->https_port : c->config->tcp_port;

        if (c->channel)
                tether_channel_peer(c->channel, buf, size);
        else
                snprintf(buf, size, "%s:%u", c->config->mp_host, port);
}

static void update_status(struct channeld *c) {
        struct spool_counts counts = {0};
        char text[PRIV_STATUS_MAX + 1], peer[200];

        mp_peer(c, peer, sizeof(peer));

        (void)spool_count(c->spool, &counts);
        switch (c->state) {
        case TETHER_CHANNEL_CONNECTED:
                if (session_approved(c->session))
                        snprintf(text, sizeof(text), "Connected to %s (%s), %u responses queued", peer,
                                 c->transport, counts.unacked);
                else
                        snprintf(text, sizeof(text), "Signing in to %s (%s): %s, %u responses queued", peer,
                                 c->transport,
                                 session_last_error(c->session)[0] ? session_last_error(c->session)
                                                                   : "waiting for SIGNIN_CONFIRM",
                                 counts.unacked);
                break;
        case TETHER_CHANNEL_CONNECTING:
                snprintf(text, sizeof(text), "Connecting to %s, %u responses queued", peer, counts.unacked);
                break;
        default:
                snprintf(text, sizeof(text), "Disconnected from %s%s%.200s, %u responses queued", peer,
                         c->detail[0] ? ": " : "", c->detail, counts.unacked);
                break;
        }
        for (char *p = text; *p; p++)
                if (*p == '\n')
                        *p = ' ';
        strscpy(c->status_next, sizeof(c->status_next), text);
        if (strcmp(text, c->status) == 0 || c->status_timer)
                return;
        /* Off the push path, and at most one line per interval: a push
         * changes the queue depth twice within a millisecond. */
        if (sd_event_add_time_relative(c->event, &c->status_timer, CLOCK_MONOTONIC, STATUS_DELAY_USEC, 0,
                                       status_flush, c) < 0) {
                c->status_timer = NULL;
                (void)status_flush(NULL, 0, c);
        }
}

/* --- link callbacks --- */

static int cb_make_signin(void *userdata, uint8_t **ret_frame, size_t *ret_len) {
        struct channeld *c = userdata;
        return session_make_signin(c->session, ret_frame, ret_len);
}

#define HELD_RETRY_USEC (2ULL * USEC_PER_SEC)

static int held_retry(sd_event_source *s, uint64_t usec, void *userdata) {
        struct channeld *c = userdata;

        if (session_retry_held(c->session) > 0) {
                (void)sd_event_source_set_time(s, usec + HELD_RETRY_USEC);
                (void)sd_event_source_set_enabled(s, SD_EVENT_ONESHOT);
        } else
                c->held_timer = sd_event_source_disable_unref(c->held_timer);
        return 0;
}

static void arm_held_retry(struct channeld *c) {
        if (c->held_timer || session_held(c->session) == 0)
                return;
        if (sd_event_add_time_relative(c->event, &c->held_timer, CLOCK_MONOTONIC, HELD_RETRY_USEC, 0,
                                       held_retry, c) < 0)
                c->held_timer = NULL;
}

static void cb_on_frame(void *userdata, struct tether_frame *frame) {
        struct channeld *c = userdata;

        /* Nothing more is taken from a peer we are about to hang up on. */
        if (c->reconnect_timer) {
                tether_frame_free(frame);
                return;
        }
        session_on_frame(c->session, frame);
        arm_held_retry(c);
}

static void cb_on_state(void *userdata, enum tether_channel_state state, const char *transport,
                        const char *detail) {
        struct channeld *c = userdata;

        c->state = state;
        strscpy(c->transport, sizeof(c->transport), transport ? transport : "");
        strscpy(c->detail, sizeof(c->detail), detail ? detail : "");
        /* Connected, the link's detail names the peer (agent/channel.h). */
        if (state == TETHER_CHANNEL_CONNECTED)
                strscpy(c->peer, sizeof(c->peer), detail ? detail : "");
        if (state != TETHER_CHANNEL_CONNECTED) {
                session_on_disconnect(c->session);
                /* The link is already down (the peer hung up after our
                 * GOODBYE) and reconnects by itself: a deferred reconnect
                 * would only tear down the next, healthy connection. */
                c->reconnect_timer = sd_event_source_disable_unref(c->reconnect_timer);
        }
        update_status(c);
}

/* --- session ops --- */

static int op_send(void *userdata, const uint8_t *frame, size_t len) {
        struct channeld *c = userdata;
        return c->channel ? tether_channel_send(c->channel, frame, len) : -ENOTCONN;
}

static void op_confirmed(void *userdata, uint32_t keepalive_seconds) {
        struct channeld *c = userdata;
        uint32_t ka = c->config->keepalive_seconds ? c->config->keepalive_seconds : keepalive_seconds;
        if (c->channel)
                tether_channel_confirmed(c->channel, ka);
}

static int deferred_reconnect(sd_event_source *s, uint64_t usec, void *userdata) {
        struct channeld *c = userdata;

        c->reconnect_timer = sd_event_source_disable_unref(c->reconnect_timer);
        if (c->channel)
                tether_channel_reconnect(c->channel, c->reconnect_delay, "protocol-error");
        return 0;
}

#define GOODBYE_FLUSH_USEC (200ULL * 1000ULL)

static int spread_restart(sd_event_source *s, uint64_t usec, void *userdata) {
        struct channeld *c = userdata;
        int r;

        c->spread_timer = sd_event_source_disable_unref(c->spread_timer);
        if (!c->channel)
                return 0;
        r = tether_channel_start(c->channel);
        if (r < 0 && r != -EALREADY)
                log_error_errno(r, "Cannot reconnect to the MP: %m");
        return 0;
}

/*
 * GOODBYE(shutdown) from a restarting MP reaches the whole fleet at once.
 * RetryAfterSeconds is the floor (section 5), and the reconnection is spread
 * uniformly over one more such window, [N, 2N] seconds, with microsecond
 * precision, so that the fleet does not come back in step. The link's own
 * reconnect takes whole seconds and adds no jitter above a floor, so this
 * stops the link and starts it again from a timer of our own.
 */
static bool spread_after_shutdown(struct channeld *c, uint32_t retry_after) {
        uint64_t window = (uint64_t)retry_after * USEC_PER_SEC, delay;
        uint64_t rnd = 0;

        if (window == 0)
                return false;
        if (getrandom(&rnd, sizeof(rnd), GRND_NONBLOCK) != (ssize_t)sizeof(rnd))
                rnd = (uint64_t)getpid() * 0x9E3779B97F4A7C15ULL ^ (uint64_t)time(NULL);
        delay = window + rnd % (window + 1);
        c->spread_timer = sd_event_source_disable_unref(c->spread_timer);
        if (sd_event_add_time_relative(c->event, &c->spread_timer, CLOCK_MONOTONIC, delay, 0, spread_restart,
                                       c) < 0)
                return false;
        tether_channel_stop(c->channel);
        session_on_disconnect(c->session);
        c->state = TETHER_CHANNEL_DISCONNECTED;
        c->transport[0] = 0;
        snprintf(c->detail, sizeof(c->detail), "the MP is restarting; reconnecting in %llu.%01llu s",
                 (unsigned long long)(delay / USEC_PER_SEC),
                 (unsigned long long)(delay % USEC_PER_SEC / 100000));
        log_info("The MP is restarting: reconnecting in %llu.%01llu s (spread over its %u s window)",
                 (unsigned long long)(delay / USEC_PER_SEC),
                 (unsigned long long)(delay % USEC_PER_SEC / 100000), retry_after);
        update_status(c);
        return true;
}

static void op_reconnect(void *userdata, uint32_t min_delay, const char *reason) {
        struct channeld *c = userdata;

        if (!c->channel)
                return;
        if (strcmp(reason, "shutdown") == 0 && spread_after_shutdown(c, min_delay))
                return;
        if (strcmp(reason, "overloaded") == 0) {
                /* PROTOCOL-v1 7.4: another address after RetryAfterSeconds. */
                tether_channel_move(c->channel, min_delay, reason);
                return;
        }
        if (strcmp(reason, "protocol-error") == 0 && !c->reconnect_timer) {
                /* The link writes asynchronously and closing now would drop
                 * the GOODBYE; give it a moment (the write has its own
                 * deadline in the link). */
                c->reconnect_delay = min_delay;
                if (sd_event_add_time_relative(c->event, &c->reconnect_timer, CLOCK_MONOTONIC,
                                               GOODBYE_FLUSH_USEC, 0, deferred_reconnect, c) >= 0)
                        return;
                c->reconnect_timer = NULL;
        }
        tether_channel_reconnect(c->channel, min_delay, reason);
}

int op_run(void *userdata, uint32_t cycle, const char *task_guid, const char *param) {
        struct channeld *c = userdata;
        uint8_t *buf = NULL;
        size_t len;
        int r = priv_build_run(cycle, task_guid, param, &buf, &len);
        return priv_send_buf(c, r, buf, len);
}

static void send_site_key(struct channeld *c, const struct tether_key *key) {
        _cleanup_(freep) uint8_t *der = NULL;
        uint8_t *buf = NULL;
        size_t der_len = 0, len = 0;
        int r;

        r = tether_key_spki_der(key, &der, &der_len);
        if (r >= 0)
                r = priv_build_site_key(der, der_len, &buf, &len);
        r = priv_send_buf(c, r, buf, len);
        if (r < 0)
                log_error_errno(r, "Cannot pass the site key to the scheduler process: %m");
}

/* The chain goes as text; the scheduler process verifies it from its own
 * key (agent/schedd.c) and keeps its own copy. */
static void send_site_chain(struct channeld *c) {
        _cleanup_(freep) char *text = NULL;
        uint8_t *buf = NULL;
        size_t len = 0, blen = 0;
        int r;

        r = site_trust_chain_text(c->trust, &text, &len);
        if (r < 0 || len == 0)
                return;
        r = priv_build_site_chain(text, len, &buf, &blen);
        r = priv_send_buf(c, r, buf, blen);
        if (r < 0)
                log_error_errno(r, "Cannot pass the site key chain to the scheduler process: %m");
}

static void op_site_key(void *userdata, const struct tether_key *key) {
        send_site_key(userdata, key);
        send_site_chain(userdata);
}

static void op_rollover_done(void *userdata) {
        struct channeld *c = userdata;
        _cleanup_(freep) char *dir = path_join(c->config->state_dir, "identity");
        char fp[TETHER_FINGERPRINT_LEN] = "";
        int r;

        (void)tether_key_fingerprint(c->identity->key, fp);
        r = dir ? identity_rollover_done(dir, c->identity) : -ENOMEM;
        if (r < 0)
                log_error_errno(r, "The MP confirmed the device key rotation, but the old key could not be "
                                   "removed: %m");
        else
                log_notice(
                        "The MP confirmed the device key rotation of %s to key %s; the old key is destroyed",
                        c->identity->client_id, fp);
}

static void op_changed(void *userdata) {
        update_status(userdata);
}

static const char *op_peer(void *userdata) {
        struct channeld *c = userdata;
        return c->peer;
}

static const struct session_ops session_ops = {
        .send = op_send,
        .confirmed = op_confirmed,
        .reconnect = op_reconnect,
        .run = op_run,
        .site_key = op_site_key,
        .rollover_done = op_rollover_done,
        .changed = op_changed,
        .peer = op_peer,
};

/* --- policies for the scheduler half --- */

struct policy_fetch {
        struct channeld *c;
        char user[PRIV_USER_MAX];
};

static struct etag_entry *etag_find(struct channeld *c, const char *user, bool create) {
        for (size_t i = 0; i < c->n_etags; i++)
                if (strcmp(c->etags[i].user, user) == 0)
                        return &c->etags[i];
        if (!create || c->n_etags >= MAX_ETAGS)
                return NULL;
        c->etags[c->n_etags].user = strdup(user);
        if (!c->etags[c->n_etags].user)
                return NULL;
        c->etags[c->n_etags].etag = NULL;
        return &c->etags[c->n_etags++];
}

static void send_policy(struct channeld *c, const char *user, uint32_t result, int error,
                        const uint8_t *body, size_t len, const uint8_t *sig, size_t sig_len) {
        uint8_t *buf = NULL;
        size_t blen;
        int r = priv_build_policy(user, result, error, body, len, sig, sig_len, &buf, &blen);
        r = priv_send_buf(c, r, buf, blen);
        if (r < 0)
                log_error_errno(r, "Cannot pass the policy for %s to the scheduler process: %m",
                                user[0] ? user : "the machine");
}

static void policy_fetched(void *userdata, int error, long http_status, const uint8_t *body, size_t len,
                           const char *signature_b64, const char *etag) {
        _cleanup_(freep) struct policy_fetch *f = userdata;
        _cleanup_(freep) uint8_t *sig = NULL;
        struct channeld *c = f->c;
        struct etag_entry *e;
        size_t sig_len = 0;
        int r;

        if (error < 0 || (http_status != 200 && http_status != 304 && http_status != 404)) {
                send_policy(c, f->user, TETHER_POLICY_ERROR, error < 0 ? error : -EIO, NULL, 0, NULL, 0);
                return;
        }
        if (http_status == 304) {
                send_policy(c, f->user, TETHER_POLICY_UNCHANGED, 0, NULL, 0, NULL, 0);
                return;
        }
        if (http_status == 404) {
                e = etag_find(c, f->user, false);
                if (e) {
                        free(e->etag);
                        e->etag = NULL;
                }
                send_policy(c, f->user, TETHER_POLICY_NONE, 0, NULL, 0, NULL, 0);
                return;
        }
        if (!signature_b64 || tether_base64_decode(signature_b64, &sig, &sig_len) < 0 || sig_len == 0 ||
            sig_len > PRIV_SIG_MAX || len > PRIV_POLICY_MAX) {
                send_policy(c, f->user, TETHER_POLICY_ERROR, -EBADMSG, NULL, 0, NULL, 0);
                return;
        }
        e = etag_find(c, f->user, true);
        if (e) {
                free(e->etag);
                e->etag = strdup_or_null(etag);
        }
        (void)r;
        send_policy(c, f->user, TETHER_POLICY_NEW, 0, body, len, sig, sig_len);
}

static void handle_policy_request(struct channeld *c, const char *user) {
        struct policy_fetch *f;
        struct etag_entry *e;
        int r;

        f = calloc(1, sizeof(*f));
        if (!f) {
                send_policy(c, user, TETHER_POLICY_ERROR, -ENOMEM, NULL, 0, NULL, 0);
                return;
        }
        f->c = c;
        strscpy(f->user, sizeof(f->user), user);
        e = etag_find(c, user, false);
        r = c->channel ? tether_channel_fetch_policy(c->channel, user[0] ? user : NULL, e ? e->etag : NULL,
                                                     policy_fetched, f)
                       : -ENOTCONN;
        if (r < 0) {
                free(f);
                send_policy(c, user, TETHER_POLICY_ERROR, r, NULL, 0, NULL, 0);
        }
}

/* --- the privsep socket --- */

static int priv_io(sd_event_source *s, int fd, uint32_t revents, void *userdata) {
        struct channeld *c = userdata;
        struct priv_msg m;
        size_t k;
        int r;

        r = priv_recv(fd, PRIV_SIDE_CHANNEL, c->priv_buf, &m, &k);
        if (r == 0)
                return 0;
        if (r == -EPIPE) {
                if (!c->stopping)
                        log_error("The scheduler process went away; stopping");
                return sd_event_exit(c->event, c->stopping ? 0 : 1);
        }
        if (r < 0) {
                log_error("Invalid message from the scheduler process (%zu bytes); stopping", k);
                return sd_event_exit(c->event, 1);
        }
        switch (m.type) {
        case PRIV_DONE: {
                char detail[PRIV_DETAIL_MAX + 1];
                memcpy(detail, m.data, m.data_len);
                detail[m.data_len] = 0;
                if (c->stopping)
                        break; /* a cycle cut short by the shutdown: re-run after restart */
                (void)session_task_done(c->session, m.done.cycle, m.done.task_guid, m.done.return_code,
                                        detail);
                break;
        }
        case PRIV_POLICY_REQUEST:
                handle_policy_request(c, m.policy_request.user);
                break;
        case PRIV_PING: {
                uint8_t *buf = NULL;
                size_t len;
                r = priv_build_ping(PRIV_PONG, m.ping.seq, &buf, &len);
                r = priv_send_buf(c, r, buf, len);
                if (r < 0)
                        log_debug_errno(r, "Cannot answer a ping: %m");
                break;
        }
        default:
                break;
        }
        return 0;
}

/* --- life cycle --- */

static uint64_t uptime_seconds(void) {
        struct timespec ts;

        /* Unknown uptime: assume a long-running machine, connect at once. */
        if (clock_gettime(CLOCK_BOOTTIME, &ts) < 0)
                return UINT64_MAX;
        return (uint64_t)ts.tv_sec;
}

int channel_create(struct channeld *c) {
        char seed[65] = "";
        struct tether_channel_config cc = {
                .host = c->config->mp_host,
                .order_seed = seed,
                .tcp_port = c->config->tcp_port,
                .https_port = c->config->https_port,
                .mode = c->config->transport,
                .ca_file = c->config->ca_file,
                .pinned_fingerprint = c->config->server_fingerprint,
                .proxy = c->config->proxy,
                .cert_pem = c->identity->cert_pem,
                .device_key = c->identity->key,
                .max_frame = c->config->max_frame,
                .keepalive_seconds = c->config->keepalive_seconds ? c->config->keepalive_seconds : 180,
                .start_delay_max_seconds = tether_config_start_delay(c->config, uptime_seconds()),
                .https_hold_seconds = c->config->https_hold_seconds,
                .https_alt_ports = c->config->https_alt_ports,
                .tcp_retry_usec = c->config->tcp_retry_usec,
        };
        static const struct tether_channel_callbacks callbacks = {
                .make_signin = cb_make_signin,
                .on_frame = cb_on_frame,
                .on_state = cb_on_state,
        };
        /* The order of several MP addresses is stable per device: the
         * machine ID's hash, or the ClientID where there is none. */
        if (identity_machine_hash(c->config->machine_id_file, seed) < 0)
                strscpy(seed, sizeof(seed), c->identity->client_id);
        return tether_channel_new(c->event, &cc, &callbacks, c, &c->channel);
}

static int gc_tick(sd_event_source *s, uint64_t usec, void *userdata) {
        struct channeld *c = userdata;
        int n = spool_gc(c->spool, time(NULL));

        rotate_if_due(c);
        if (n > 0)
                log_info("Forgot %d tasks more than 7 days past their expiry", n);
        else if (n < 0)
                log_warning_errno(n, "Cannot clean the spool, ignoring: %m");
        (void)sd_event_source_set_time(s, usec + GC_INTERVAL_USEC);
        return 0;
}

static int session_create(struct channeld *c) {
        char hostname[256] = "localhost";
        struct session_config sc = {
                .client_id = c->identity->client_id,
                .device_key = c->identity->key,
                .hostname = hostname,
                .enrolment_token = c->config->enrolment_token,
                .max_frame = c->config->max_frame,
        };

        if (gethostname(hostname, sizeof(hostname) - 1) < 0)
                strscpy(hostname, sizeof(hostname), "localhost");
        for (int i = 1; i <= TETHER_TASK_TYPE_MAX; i++)
                sc.enabled[i] = c->config->enabled[i];
        return session_new(&sc, c->trust, c->spool, &session_ops, c, &c->session);
}

/* The channel's durable state under state_dir: the device identity, the
 * spool, the site trust. */
static int open_state(struct channeld *c) {
        const struct tether_config *config = c->config;
        _cleanup_(freep) char *id_dir = path_join(config->state_dir, "identity");
        _cleanup_(freep) char *spool_dir = path_join(config->state_dir, "spool");
        _cleanup_(freep) char *trust_dir = path_join(config->state_dir, "trust");
        enum identity_origin origin;
        struct spool_recovery rec;
        char reason[256] = "", err[256] = "";
        int r;

        if (!id_dir || !spool_dir || !trust_dir)
                return -ENOMEM;
        r = identity_load_or_create(id_dir, config->machine_id_file, &c->identity, &origin, reason);
        if (r < 0) {
                log_error_errno(r, "Cannot load or create the device identity under '%s': %m", id_dir);
                return r;
        }
        if (origin == IDENTITY_LOADED)
                log_info("Device identity: ClientID %s", c->identity->client_id);
        else if (origin == IDENTITY_CREATED_FIRST)
                log_notice("Created the device identity: ClientID %s", c->identity->client_id);
        else
                log_warning("Created a new device identity, ClientID %s, because %s", c->identity->client_id,
                            reason);

        r = spool_open(spool_dir, &c->spool, &rec);
        if (r < 0) {
                log_error_errno(r, "Cannot open the spool '%s': %m", spool_dir);
                return r;
        }
        if (rec.tmp_removed)
                log_notice("Spool: removed %u temporary files of writes cut short by a crash",
                           rec.tmp_removed);
        if (rec.quarantined)
                log_warning("Spool: %u damaged records moved to '%s/quarantine'", rec.quarantined,
                            spool_dir);

        r = mkdir_p(trust_dir, 0700);
        if (r < 0) {
                log_error_errno(r, "Cannot create '%s': %m", trust_dir);
                return r;
        }
        r = site_trust_new(config, trust_dir, &c->trust, err);
        if (r < 0) {
                log_error("Site key: %s", err);
                return r;
        }
        return 0;
}

int channeld_new(sd_event *event, struct tether_config *config, int priv_fd, int control_fd,
                 struct channeld **ret) {
        struct channeld *c;
        int r;

        c = calloc(1, sizeof(*c));
        if (!c) {
                tether_config_free(config);
                close(priv_fd);
                if (control_fd >= 0)
                        close(control_fd);
                return -ENOMEM;
        }
        c->event = sd_event_ref(event);
        c->config = config;
        c->priv_fd = priv_fd;
        c->state = TETHER_CHANNEL_IDLE;

        c->priv_buf = malloc(PRIV_MSG_MAX);
        if (!c->priv_buf) {
                r = -ENOMEM;
                goto fail;
        }
        if (control_fd >= 0) {
                r = control_server_new(event, control_fd, ctl_handler, c, &c->control);
                control_fd = -1;
                if (r < 0) {
                        log_error_errno(r, "Cannot serve the control socket: %m");
                        goto fail;
                }
        }

        r = open_state(c);
        if (r < 0)
                goto fail;
        r = session_create(c);
        if (r < 0)
                goto fail;
        if (c->identity->previous_key) {
                log_notice("Device key rotation of %s waits for the MP's confirm; the old key is kept",
                           c->identity->client_id);
                session_set_rollover(c->session, c->identity->previous_key);
        }
        r = channel_create(c);
        if (r < 0) {
                log_error_errno(r, "Cannot set up the channel to the MP: %m");
                goto fail;
        }
        r = sd_event_add_io(event, &c->priv_source, priv_fd, EPOLLIN, priv_io, c);
        if (r < 0)
                goto fail;
        /* channeld_start() collects once at start; the next one is a day
         * later. Generous accuracy: it runs at a wakeup the agent has
         * anyway (a keepalive), not at a wakeup of its own. */
        r = sd_event_add_time_relative(event, &c->gc_timer, CLOCK_BOOTTIME, GC_INTERVAL_USEC,
                                       3600 * USEC_PER_SEC, gc_tick, c);
        if (r < 0)
                goto fail;
        (void)sd_event_source_set_enabled(c->gc_timer, SD_EVENT_ON);
        *ret = c;
        return 0;
fail:
        if (control_fd >= 0)
                close(control_fd);
        channeld_free(c);
        return r;
}

struct channeld *channeld_free(struct channeld *c) {
        if (!c)
                return NULL;
        c->channel = tether_channel_free(c->channel);
        control_server_free(c->control);
        session_free(c->session);
        site_trust_free(c->trust);
        spool_close(c->spool);
        identity_free(c->identity);
        sd_event_source_disable_unref(c->priv_source);
        sd_event_source_disable_unref(c->gc_timer);
        sd_event_source_disable_unref(c->reconnect_timer);
        sd_event_source_disable_unref(c->spread_timer);
        sd_event_source_disable_unref(c->held_timer);
        sd_event_source_disable_unref(c->status_timer);
        if (c->priv_fd >= 0)
                close(c->priv_fd);
        for (size_t i = 0; i < c->n_etags; i++) {
                free(c->etags[i].user);
                free(c->etags[i].etag);
        }
        free(c->priv_buf);
        tether_config_free(c->config);
        sd_event_unref(c->event);
        free(c);
        return NULL;
}

int channeld_start(struct channeld *c) {
        int r;

        if (site_trust_root(c->trust)) {
                send_site_key(c, site_trust_root(c->trust));
                send_site_chain(c);
        }
        r = session_resume(c->session);
        if (r < 0)
                log_warning_errno(r, "Cannot resume unanswered tasks, ignoring: %m");
        (void)spool_gc(c->spool, time(NULL));
        update_status(c);
        r = tether_channel_start(c->channel);
        if (r >= 0)
                rotate_if_due(c);
        return r;
}

void channeld_stop(struct channeld *c) {
        c->stopping = true;
        if (c->channel)
                tether_channel_stop(c->channel);
}

int channeld_reload(struct channeld *c, struct tether_config *config) {
        struct tether_config *old = c->config;
        bool relink =
                strcmp(old->mp_host, config->mp_host) != 0 || old->tcp_port != config->tcp_port ||
                old->https_port != config->https_port || old->transport != config->transport ||
                !!old->ca_file != !!config->ca_file ||
                (old->ca_file && strcmp(old->ca_file, config->ca_file) != 0) ||
                !!old->server_fingerprint != !!config->server_fingerprint ||
                (old->server_fingerprint &&
                 strcmp(old->server_fingerprint, config->server_fingerprint) != 0) ||
                !!old->proxy != !!config->proxy || (old->proxy && strcmp(old->proxy, config->proxy) != 0) ||
                old->keepalive_seconds != config->keepalive_seconds || old->max_frame != config->max_frame ||
                memcmp(&old->https_alt_ports, &config->https_alt_ports, sizeof(config->https_alt_ports)) !=
                        0 ||
                old->tcp_retry_usec != config->tcp_retry_usec;
        int r;

        log_set_max_level(config->log_level);
        c->config = config;
        if (relink) {
                log_notice("Configuration reloaded: reconnecting with the new MP settings");
                c->spread_timer = sd_event_source_disable_unref(c->spread_timer);
                c->reconnect_timer = sd_event_source_disable_unref(c->reconnect_timer);
                c->channel = tether_channel_free(c->channel);
                session_on_disconnect(c->session);
                r = channel_create(c);
                if (r >= 0)
                        r = tether_channel_start(c->channel);
                if (r < 0) {
                        log_error_errno(r,
                                        "Cannot restart the channel with the new configuration, keeping the "
                                        "old one: %m");
                        c->channel = tether_channel_free(c->channel);
                        c->config = old;
                        tether_config_free(config);
                        r = channel_create(c);
                        if (r >= 0)
                                r = tether_channel_start(c->channel);
                        return r;
                }
        } else
                log_info("Configuration reloaded");
        session_set_enabled(c->session, config->enabled);
        tether_config_free(old);
        return 0;
}
