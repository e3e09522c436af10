/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The channel process's answers to tetherctl (over agent/control.c): status,
 * tasks, stats, identity show/reset/rotate, trigger.
 */
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
#include "transport/sign.h"

/* --- tetherctl --- */

static struct json_object *answer_error(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static struct json_object *answer_error(const char *fmt, ...) {
        struct json_object *o = json_object_new_object();
        char text[512];
        va_list ap;

        va_start(ap, fmt);
        vsnprintf(text, sizeof(text), fmt, ap);
        va_end(ap);
        if (!o)
                return NULL;
        json_object_object_add(o, "ok", json_object_new_boolean(0));
        json_object_object_add(o, "error", json_object_new_string(text));
        return o;
}

static struct json_object *answer_ok(void) {
        struct json_object *o = json_object_new_object();
        if (o)
                json_object_object_add(o, "ok", json_object_new_boolean(1));
        return o;
}

static const char *state_name(enum tether_channel_state s) {
        switch (s) {
        case TETHER_CHANNEL_IDLE:
                return "idle";
        case TETHER_CHANNEL_CONNECTING:
                return "connecting";
        case TETHER_CHANNEL_CONNECTED:
                return "connected";
        case TETHER_CHANNEL_DISCONNECTED:
                return "disconnected";
        }
        return "unknown";
}

static void add_str(struct json_object *o, const char *k, const char *v) {
        json_object_object_add(o, k, json_object_new_string(v ? v : ""));
}

/* The trusted site keys with their serials (tetherctl status). */
static void add_site_keys(struct channeld *c, struct json_object *o) {
        const struct tether_site_chain *chain = site_trust_chain(c->trust);
        struct json_object *arr = json_object_new_array();
        time_t now = time(NULL);

        if (!arr)
                return;
        json_object_object_add(o, "site_keys", arr);
        if (!chain)
                return;
        for (size_t i = 0; i < tether_site_chain_len(chain); i++) {
                struct json_object *k = json_object_new_object();
                char fp[TETHER_FINGERPRINT_LEN] = "", nb[TETHER_TIMESTAMP_LEN] = "";
                size_t cur = tether_site_chain_current(chain, now);

                if (!k)
                        return;
                (void)tether_key_fingerprint(tether_site_chain_key(chain, i), fp);
                if (i > 0)
                        (void)tether_timestamp_format(tether_site_chain_not_before(chain, i), nb);
                json_object_object_add(k, "serial", json_object_new_int64((int64_t)i + 1));
                add_str(k, "fingerprint", fp);
                add_str(k, "not_before", nb);
                add_str(k, "state",
                        i == cur  ? "current"
                        : i > cur ? "waiting for NotBefore"
                        : tether_site_chain_accepts(chain, i, now, TETHER_SITE_KEY_OVERLAP_SECONDS)
                                ? "previous (overlap)"
                                : "retired");
                json_object_array_add(arr, k);
        }
}

static struct json_object *ctl_status(struct channeld *c) {
        struct json_object *o = answer_ok();
        struct spool_counts counts = {0};
        char fp[TETHER_FINGERPRINT_LEN] = "", mp[300];
        const struct tether_key *site = site_trust_key(c->trust);

        if (!o)
                return NULL;
        (void)spool_count(c->spool, &counts);
        if (site)
                (void)tether_key_fingerprint(site, fp);
        mp_peer(c, mp, sizeof(mp));
        add_str(o, "state",
                c->state == TETHER_CHANNEL_CONNECTED && session_approved(c->session) ? "signed-in"
                                                                                     : state_name(c->state));
        add_str(o, "transport", c->transport);
        add_str(o, "transport_mode", tether_config_transport_name(c->config->transport));
        add_str(o, "mp", mp);
        add_str(o, "client_id", c->identity->client_id);
        add_str(o, "site_key_fingerprint", fp[0] ? fp : "(not known yet)");
        add_site_keys(c, o);
        json_object_object_add(o, "device_key_rollover_pending",
                               json_object_new_boolean(c->identity->previous_key != NULL));
        json_object_object_add(o, "pending_tasks", json_object_new_int((int)counts.pending_tasks));
        json_object_object_add(o, "queued_responses", json_object_new_int((int)counts.unacked));
        json_object_object_add(o, "remembered_tasks", json_object_new_int((int)counts.tasks));
        /* When connected, the link's detail is the peer, not an error. */
        add_str(o, "last_error",
                session_last_error(c->session)[0]      ? session_last_error(c->session)
                : c->state == TETHER_CHANNEL_CONNECTED ? ""
                                                       : c->detail);
        add_str(o, "status", c->status);
        json_object_object_add(o, "users", control_active_users());
        return o;
}

static struct json_object *ctl_tasks(struct channeld *c) {
        struct spool_task tasks[RECENT_TASKS];
        uint32_t codes[RECENT_TASKS];
        struct json_object *o = answer_ok(), *arr;
        int n;

        if (!o)
                return NULL;
        n = spool_recent(c->spool, tasks, codes, RECENT_TASKS);
        if (n < 0) {
                json_object_put(o);
                return answer_error("cannot read the spool: %s", strerror(-n));
        }
        arr = json_object_new_array();
        for (int i = 0; i < n; i++) {
                struct json_object *t = json_object_new_object();
                char ts[TETHER_TIMESTAMP_LEN] = "";
                (void)tether_timestamp_format(tasks[i].received, ts);
                add_str(t, "task_guid", tasks[i].task_guid);
                json_object_object_add(t, "push_id", json_object_new_int64((int64_t)tasks[i].push_id));
                json_object_object_add(t, "task_id", json_object_new_int64((int64_t)tasks[i].task_id));
                json_object_object_add(t, "task_type", json_object_new_int((int)tasks[i].task_type));
                add_str(t, "received", ts);
                json_object_object_add(t, "return_code", json_object_new_int((int)codes[i]));
                add_str(t, "result", codes[i] ? tether_return_code_name(codes[i]) : "running");
                add_str(t, "param", tasks[i].param);
                json_object_array_add(arr, t);
                spool_task_done(&tasks[i]);
        }
        json_object_object_add(o, "tasks", arr);
        return o;
}

static struct json_object *ctl_identity(struct channeld *c) {
        struct json_object *o = answer_ok();
        char fp[TETHER_FINGERPRINT_LEN] = "";

        if (!o)
                return NULL;
        (void)tether_key_fingerprint(c->identity->key, fp);
        add_str(o, "client_id", c->identity->client_id);
        add_str(o, "device_key_fingerprint", fp);
        add_str(o, "machine_id_sha256", c->identity->machine_hash);
        add_str(o, "certificate", c->identity->cert_pem);
        json_object_object_add(o, "rollover_pending",
                               json_object_new_boolean(c->identity->previous_key != NULL));
        return o;
}

/* Per-stage timing of the pushes handled, in microseconds (issue 7). */
static struct json_object *ctl_stats(struct channeld *c) {
        const struct pushstats *ps = session_pushstats(c->session);
        struct json_object *o = answer_ok(), *arr;

        if (!o)
                return NULL;
        arr = json_object_new_array();
        if (!arr) {
                json_object_put(o);
                return NULL;
        }
        json_object_object_add(o, "stages", arr);
        json_object_object_add(o, "window", json_object_new_int(PUSHSTATS_RING));
        for (enum pushstats_stage st = 0; st < _PUSHSTATS_STAGE_MAX; st++) {
                struct pushstats_summary sum;
                struct json_object *t;
                int r = pushstats_summary(ps, st, &sum);
                if (r < 0) {
                        json_object_put(o);
                        return answer_error("cannot compute the statistics: %s", strerror(-r));
                }
                t = json_object_new_object();
                if (!t) {
                        json_object_put(o);
                        return NULL;
                }
                add_str(t, "stage", pushstats_stage_name(st));
                json_object_object_add(t, "count", json_object_new_int64((int64_t)sum.count));
                json_object_object_add(t, "samples", json_object_new_int64((int64_t)sum.window));
                json_object_object_add(t, "median_us", json_object_new_int64((int64_t)sum.median_us));
                json_object_object_add(t, "p99_us", json_object_new_int64((int64_t)sum.p99_us));
                json_object_object_add(t, "max_us", json_object_new_int64((int64_t)sum.max_us));
                json_object_array_add(arr, t);
        }
        return o;
}

static struct json_object *ctl_identity_reset(struct channeld *c) {
        struct tether_identity *id = NULL;
        _cleanup_(freep) char *dir = path_join(c->config->state_dir, "identity");
        int r;

        if (!dir)
                return NULL;
        r = identity_reset(dir, c->config->machine_id_file, &id);
        if (r < 0)
                return answer_error("cannot make a new identity: %s", strerror(-r));
        log_notice("Identity reset on request: new ClientID %s (was %s)", id->client_id,
                   c->identity->client_id);
        /* The link borrows the key: it goes first. */
        c->spread_timer = sd_event_source_disable_unref(c->spread_timer);
        c->reconnect_timer = sd_event_source_disable_unref(c->reconnect_timer);
        c->channel = tether_channel_free(c->channel);
        identity_free(c->identity);
        c->identity = id;
        (void)session_set_identity(c->session, id->client_id, id->key);
        session_on_disconnect(c->session);
        r = channel_create(c);
        if (r >= 0)
                r = tether_channel_start(c->channel);
        if (r < 0)
                return answer_error("new identity made, but the channel did not restart: %s", strerror(-r));
        return ctl_identity(c);
}

/* A new device key for the same ClientID (PROTOCOL-v1 7.3): the link
 * restarts with the new certificate, and SIGNIN carries the rollover until
 * the MP confirms it. */
static int identity_rotate_now(struct channeld *c, const char *why) {
        struct tether_identity *id = NULL;
        _cleanup_(freep) char *dir = path_join(c->config->state_dir, "identity");
        char fp[TETHER_FINGERPRINT_LEN] = "";
        int r;

        if (!dir)
                return -ENOMEM;
        r = identity_rotate(dir, c->identity, &id);
        if (r < 0)
                return r;
        (void)tether_key_fingerprint(id->key, fp);
        log_notice("Device key rotated (%s): ClientID %s now has key %s; the old key is kept until the MP "
                   "confirms",
                   why, id->client_id, fp);
        /* The link borrows the key: it goes first. */
        c->spread_timer = sd_event_source_disable_unref(c->spread_timer);
        c->reconnect_timer = sd_event_source_disable_unref(c->reconnect_timer);
        c->channel = tether_channel_free(c->channel);
        identity_free(c->identity);
        c->identity = id;
        (void)session_set_identity(c->session, id->client_id, id->key);
        session_set_rollover(c->session, id->previous_key);
        session_on_disconnect(c->session);
        r = channel_create(c);
        if (r >= 0)
                r = tether_channel_start(c->channel);
        return r;
}

static struct json_object *ctl_identity_rotate(struct channeld *c) {
        int r = identity_rotate_now(c, "on request");

        if (r == -EBUSY)
                return answer_error("an earlier key rotation still waits for the MP's confirm");
        if (r < 0)
                return answer_error("cannot rotate the device key: %s", strerror(-r));
        return ctl_identity(c);
}

/* [agent] key_rotation_days: rotate when the key is older (checked at
 * start and with the daily spool collection). */
void rotate_if_due(struct channeld *c) {
        uint32_t days = c->config->key_rotation_days;
        time_t now = time(NULL);
        int r;

        if (days == 0 || c->identity->previous_key || c->identity->key_created == 0 ||
            now - c->identity->key_created < (time_t)days * 86400)
                return;
        r = identity_rotate_now(c, "key_rotation_days");
        if (r < 0)
                log_error_errno(r, "Periodic device key rotation failed; trying again tomorrow: %m");
}

struct json_object *ctl_handler(void *userdata, const char *command, const char *argument, uid_t peer_uid) {
        struct channeld *c = userdata;

        if (strcmp(command, "status") == 0)
                return ctl_status(c);
        if (strcmp(command, "tasks") == 0)
                return ctl_tasks(c);
        if (strcmp(command, "stats") == 0)
                return ctl_stats(c);
        if (strcmp(command, "identity") == 0) {
                if (!argument[0] || strcmp(argument, "show") == 0)
                        return ctl_identity(c);
                if (strcmp(argument, "reset") == 0) {
                        /* A new identity means a new device at the MP: root only
                         * (the tether group may look and trigger). */
                        if (peer_uid != 0 && peer_uid != getuid())
                                return answer_error("identity reset needs root");
                        return ctl_identity_reset(c);
                }
                if (strcmp(argument, "rotate") == 0) {
                        if (peer_uid != 0 && peer_uid != getuid())
                                return answer_error("identity rotate needs root");
                        return ctl_identity_rotate(c);
                }
                return answer_error("unknown identity command '%s' (show, reset, rotate)", argument);
        }
        if (strcmp(command, "trigger") == 0) {
                uint32_t cycle = tether_task_type_from_string(argument);
                char names[TETHER_TASK_TYPE_NAMES_MAX];
                struct json_object *o;
                int r;
                if (cycle == 0) {
                        tether_task_type_cli_names(names, sizeof(names));
                        return answer_error("unknown cycle '%s' (%s, or a schedule ID)", argument, names);
                }
                if (!c->config->enabled[cycle])
                        return answer_error("the %s cycle is disabled by local configuration",
                                            tether_task_type_cli_name(cycle));
                r = op_run(c, cycle, "", "");
                if (r < 0)
                        return answer_error("cannot reach the scheduler: %s", strerror(-r));
                log_info("Cycle %s triggered locally (by uid %d)", tether_task_type_cli_name(cycle),
                         (int)peer_uid);
                o = answer_ok();
                if (o)
                        add_str(o, "triggered", tether_task_type_cli_name(cycle));
                return o;
        }
        return answer_error("unknown command '%s'", command);
}
