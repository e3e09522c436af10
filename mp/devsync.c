/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Device sync (mp/devsync.h): each run reads the device records, keeps the
 * ones whose digest differs from the one last accepted by the receiver,
 * and posts them in batches of DeviceSyncBatchSize, one at a time; a
 * failed batch ends the run, and the next attempt comes after a backoff
 * (5 s doubling, at most the interval) with whatever has changed by then.
 * The log lines follow the seeds' upload worker ("Batching N records",
 * "Next run time will be at approximately: ...").
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <time.h>

#include <curl/curl.h>
#include <openssl/evp.h>

#include "common/fsutil.h"
#include "common/log.h"
#include "mp/devsync.h"
#include "mp/mp.h"
#include "transport/sign.h"

#define DEVSYNC_STATE_MAX (256u * 1024u * 1024u)
#define DEVSYNC_RETRY_USEC (5ULL * 1000000ULL)
#define DEVSYNC_TIMEOUT_SECONDS 60L
#define DEVSYNC_FIRST_USEC (30ULL * 1000000ULL)

/* One changed device record of the current run. */
struct ds_rec {
        char *client_id;
        char digest[65];
        json_object *obj;
};

struct mp_devsync {
        struct mp_server *srv;
        char *state_path;
        json_object *sent; /* ClientID -> digest accepted by the receiver */
        uint64_t backoff_usec;
        sd_event_source *run_timer;

        struct ds_rec *pending; /* this run's changed records */
        size_t n_pending, cap_pending, next, batch_end;

        CURLM *multi;
        CURL *easy; /* the batch in flight, or NULL */
        struct curl_slist *headers;
        char *body;
        char errbuf[CURL_ERROR_SIZE];
        sd_event_source *curl_timer;
        sd_event_source **sources;
        size_t n_sources, cap_sources;
};

static uint64_t interval_usec(const struct mp_config *cfg) {
        if (cfg->devsync_interval_sec)
                return (uint64_t)cfg->devsync_interval_sec * 1000000ULL;
        return (uint64_t)cfg->devsync_interval_min * 60ULL * 1000000ULL;
}

static void pending_clear(struct mp_devsync *ds) {
        for (size_t i = 0; i < ds->n_pending; i++) {
                free(ds->pending[i].client_id);
                json_object_put(ds->pending[i].obj);
        }
        ds->n_pending = ds->next = ds->batch_end = 0;
}

static void sha256_hex(const char *text, char out[65]) {
        unsigned char md[32];
        unsigned int len = 0;

        if (EVP_Digest(text, strlen(text), md, &len, EVP_sha256(), NULL) != 1 || len != 32) {
                out[0] = 0; /* never equal to a stored digest: sent again */
                return;
        }
        for (unsigned i = 0; i < 32; i++)
                snprintf(out + 2 * i, 3, "%02x", md[i]);
}

static void put_str(json_object *o, const char *k, const char *v) {
        json_object_object_add(o, k, v ? json_object_new_string(v) : NULL);
}

static void put_time(json_object *o, const char *k, int64_t t) {
        char buf[32];
        time_t tt = (time_t)t;
        struct tm tm;

        if (t <= 0 || !gmtime_r(&tt, &tm) || !strftime(buf, sizeof(buf), "%Y-%m-%dT%H:%M:%SZ", &tm)) {
                json_object_object_add(o, k, NULL);
                return;
        }
        put_str(o, k, buf);
}

static const char *status_name(enum mp_device_status s) {
        return s == MP_DEVICE_APPROVED ? "approved" : s == MP_DEVICE_PENDING ? "pending" : "rejected";
}

static json_object *record_json(const struct mp_device_rec *d) {
        json_object *o = json_object_new_object();

        if (!o)
                return NULL;
        put_str(o, "client_id", d->client_id);
        put_str(o, "hostname", d->hostname);
        put_str(o, "agent_version", d->version);
        put_str(o, "key_fingerprint", d->fingerprint);
        put_str(o, "status", status_name(d->status));
        put_str(o, "address", d->address);
        put_str(o, "conflict", d->conflict);
        put_time(o, "first_seen", d->first_seen);
        put_time(o, "last_seen", d->last_seen);
        return o;
}

/* Adds d to the run's records when it differs from what was accepted. */
static int consider(struct mp_devsync *ds, const struct mp_device_rec *d) {
        json_object *o, *prev = NULL;
        struct ds_rec *slot;

        o = record_json(d);
        if (!o)
                return -ENOMEM;
        char digest[65];
        sha256_hex(json_object_to_json_string_ext(o, JSON_C_TO_STRING_PLAIN), digest);
        /* a hand-edited state file may hold anything: only an equal string counts */
        if (json_object_object_get_ex(ds->sent, d->client_id, &prev) &&
            json_object_is_type(prev, json_type_string) &&
            strcmp(json_object_get_string(prev), digest) == 0) {
                json_object_put(o);
                return 0;
        }
        if (mp_store_grow(&ds->pending, sizeof(*ds->pending), ds->n_pending, &ds->cap_pending) < 0 ||
            !(ds->pending[ds->n_pending].client_id = strdup(d->client_id))) {
                json_object_put(o);
                return -ENOMEM;
        }
        slot = &ds->pending[ds->n_pending++];
        memcpy(slot->digest, digest, sizeof(digest));
        slot->obj = o;
        return 0;
}

static int collect_changed(struct mp_devsync *ds) {
        struct mp_store *st = mp_registry_store(ds->srv->reg);
        struct mp_device_rec *recs = NULL;
        size_t n = 0;
        int r;

        pending_clear(ds);
        r = st->ops->devices(st, &recs, &n);
        if (r < 0)
                return r;
        for (size_t i = 0; i < n && r >= 0; i++)
                r = consider(ds, &recs[i]);
        mp_device_recs_free(recs, n);
        return r;
}

/* ---- the state file ---- */

static void state_load(struct mp_devsync *ds) {
        _cleanup_(freep) uint8_t *data = NULL;
        json_object *o, *url = NULL, *sent = NULL;
        size_t len = 0;
        int r;

        r = read_file_at(AT_FDCWD, ds->state_path, DEVSYNC_STATE_MAX, &data, &len);
        if (r == -ENOENT)
                return;
        if (r < 0) {
                log_warning_errno(r, "Device sync: cannot read %s (%m): every record is sent again",
                                  ds->state_path);
                return;
        }
        o = json_tokener_parse((const char *)data);
        if (!o || !json_object_object_get_ex(o, "url", &url) ||
            !json_object_is_type(url, json_type_string) || !json_object_object_get_ex(o, "sent", &sent) ||
            !json_object_is_type(sent, json_type_object)) {
                log_warning("Device sync: %s is not a device sync state file: every record is sent again",
                            ds->state_path);
        } else if (strcmp(json_object_get_string(url), ds->srv->cfg->devsync_url) != 0) {
                log_info("Device sync: the URL changed (was %s): every record is sent again",
                         json_object_get_string(url));
        } else {
                json_object_put(ds->sent);
                ds->sent = json_object_get(sent);
        }
        json_object_put(o);
}

static int state_save(struct mp_devsync *ds) {
        _cleanup_(json_object_putp) json_object *o = json_object_new_object();
        const char *text;

        if (!o)
                return -ENOMEM;
        put_str(o, "url", ds->srv->cfg->devsync_url);
        json_object_object_add(o, "sent", json_object_get(ds->sent));
        text = json_object_to_json_string_ext(o, JSON_C_TO_STRING_PLAIN | JSON_C_TO_STRING_NOSLASHESCAPE);
        return write_file_atomic(ds->state_path, text, strlen(text), 0600, 0);
}

/* ---- scheduling ---- */

static int on_run(sd_event_source *s, uint64_t usec, void *userdata);

static void schedule(struct mp_devsync *ds, uint64_t after_usec) {
        char when[64] = "?";
        time_t t = time(NULL) + (time_t)((after_usec + 999999) / 1000000);
        struct tm tm;
        int r;

        if (ds->run_timer) {
                r = sd_event_source_set_time_relative(ds->run_timer, after_usec);
                if (r >= 0)
                        r = sd_event_source_set_enabled(ds->run_timer, SD_EVENT_ONESHOT);
        } else
                r = sd_event_add_time_relative(ds->srv->event, &ds->run_timer, CLOCK_MONOTONIC, after_usec,
                                               100000, on_run, ds);
        if (r < 0) {
                log_error_errno(r, "Device sync: cannot arm its timer, stopped: %m");
                return;
        }
        if (localtime_r(&t, &tm))
                strftime(when, sizeof(when), "%m/%d/%Y %H:%M:%S", &tm);
        log_info("Next run time will be at approximately: %s", when);
}

static void schedule_retry(struct mp_devsync *ds) {
        uint64_t cap = interval_usec(ds->srv->cfg);

        ds->backoff_usec = ds->backoff_usec ? ds->backoff_usec * 2 : DEVSYNC_RETRY_USEC;
        if (ds->backoff_usec > cap)
                ds->backoff_usec = cap;
        log_info("Device sync: retrying in %llu s", (unsigned long long)(ds->backoff_usec / 1000000));
        schedule(ds, ds->backoff_usec);
}

/* ---- libcurl's multi interface on the loop ---- */

static void batch_done(struct mp_devsync *ds, CURLcode result);

static void process_done(struct mp_devsync *ds) {
        CURLMsg *msg;
        int left = 0;

        while ((msg = curl_multi_info_read(ds->multi, &left)))
                if (msg->msg == CURLMSG_DONE && msg->easy_handle == ds->easy) {
                        batch_done(ds, msg->data.result);
                        break; /* batch_done may start the next batch: read afresh next time */
                }
}

static int on_curl_io(sd_event_source *s, int fd, uint32_t revents, void *userdata) {
        struct mp_devsync *ds = userdata;
        int action = 0, running = 0;

        (void)s;
        if (revents & EPOLLIN)
                action |= CURL_CSELECT_IN;
        if (revents & EPOLLOUT)
                action |= CURL_CSELECT_OUT;
        if (revents & (EPOLLERR | EPOLLHUP))
                action |= CURL_CSELECT_ERR;
        (void)curl_multi_socket_action(ds->multi, fd, action, &running);
        process_done(ds);
        return 0;
}

static void forget_source(struct mp_devsync *ds, sd_event_source *s) {
        for (size_t i = 0; i < ds->n_sources; i++)
                if (ds->sources[i] == s) {
                        ds->sources[i] = ds->sources[--ds->n_sources];
                        break;
                }
        sd_event_source_disable_unref(s);
}

static int on_curl_socket(CURL *easy, curl_socket_t fd, int what, void *userp, void *socketp) {
        struct mp_devsync *ds = userp;
        sd_event_source *s = socketp;
        uint32_t events = (what & CURL_POLL_IN ? EPOLLIN : 0) | (what & CURL_POLL_OUT ? EPOLLOUT : 0);

        (void)easy;
        if (what == CURL_POLL_REMOVE) {
                if (s) {
                        forget_source(ds, s);
                        (void)curl_multi_assign(ds->multi, fd, NULL);
                }
                return 0;
        }
        if (s)
                return sd_event_source_set_io_events(s, events) < 0 ||
                                       sd_event_source_set_enabled(s, SD_EVENT_ON) < 0
                               ? -1
                               : 0;
        if (mp_store_grow(&ds->sources, sizeof(*ds->sources), ds->n_sources, &ds->cap_sources) < 0 ||
            sd_event_add_io(ds->srv->event, &s, fd, events, on_curl_io, ds) < 0)
                return -1;
        ds->sources[ds->n_sources++] = s;
        (void)curl_multi_assign(ds->multi, fd, s);
        return 0;
}

static int on_curl_timeout(sd_event_source *s, uint64_t usec, void *userdata) {
        struct mp_devsync *ds = userdata;
        int running = 0;

        (void)s;
        (void)usec;
        (void)curl_multi_socket_action(ds->multi, CURL_SOCKET_TIMEOUT, 0, &running);
        process_done(ds);
        return 0;
}

/* 0 means "now": it still goes through the loop, since curl must not be
 * re-entered from its own callback. */
static int on_curl_timer_change(CURLM *multi, long timeout_ms, void *userp) {
        struct mp_devsync *ds = userp;
        uint64_t usec = (uint64_t)(timeout_ms < 0 ? 0 : timeout_ms) * 1000ULL;
        int r;

        (void)multi;
        if (timeout_ms < 0)
                return ds->curl_timer && sd_event_source_set_enabled(ds->curl_timer, SD_EVENT_OFF) < 0 ? -1
                                                                                                       : 0;
        if (!ds->curl_timer)
                return sd_event_add_time_relative(ds->srv->event, &ds->curl_timer, CLOCK_MONOTONIC, usec,
                                                  1000, on_curl_timeout, ds) < 0
                               ? -1
                               : 0;
        r = sd_event_source_set_time_relative(ds->curl_timer, usec);
        if (r >= 0)
                r = sd_event_source_set_enabled(ds->curl_timer, SD_EVENT_ONESHOT);
        return r < 0 ? -1 : 0;
}

/* ---- batches ---- */

static void easy_drop(struct mp_devsync *ds) {
        if (ds->easy) {
                (void)curl_multi_remove_handle(ds->multi, ds->easy);
                curl_easy_cleanup(ds->easy);
                ds->easy = NULL;
        }
        curl_slist_free_all(ds->headers);
        ds->headers = NULL;
        free(ds->body);
        ds->body = NULL;
}

/* The body of one batch: {"site_fingerprint", "generated", "records": [...]}. */
static int batch_body(struct mp_devsync *ds, char **ret) {
        _cleanup_(json_object_putp) json_object *o = json_object_new_object();
        json_object *arr = json_object_new_array();
        char *text;

        if (!o || !arr) {
                json_object_put(arr);
                return -ENOMEM;
        }
        put_str(o, "site_fingerprint", ds->srv->site_fingerprint);
        put_time(o, "generated", (int64_t)time(NULL));
        json_object_object_add(o, "records", arr);
        for (size_t i = ds->next; i < ds->batch_end; i++)
                json_object_array_add(arr, json_object_get(ds->pending[i].obj));
        text = strdup(json_object_to_json_string_ext(o, JSON_C_TO_STRING_PLAIN));
        if (!text)
                return -ENOMEM;
        *ret = text;
        return 0;
}

static int batch_headers(struct mp_devsync *ds) {
        _cleanup_(freep) uint8_t *sig = NULL;
        _cleanup_(freep) char *sig_b64 = NULL;
        char line[2048];
        size_t sig_len = 0;
        int r;

        r = tether_sign(ds->srv->site_key, MP_DEVSYNC_SIG_TYPE, (const uint8_t *)ds->body, strlen(ds->body),
                        &sig, &sig_len);
        if (r >= 0)
                r = tether_base64_encode(sig, sig_len, &sig_b64);
        if (r < 0)
                return r;
        const char *fixed[] = {"Content-Type: application/json", "Expect:", NULL};
        for (size_t i = 0; fixed[i]; i++)
                if (!(ds->headers = curl_slist_append(ds->headers, fixed[i])))
                        return -ENOMEM;
        snprintf(line, sizeof(line), "Tether-Signature: %s", sig_b64);
        if (!(ds->headers = curl_slist_append(ds->headers, line)))
                return -ENOMEM;
        snprintf(line, sizeof(line), "Tether-Site-Fingerprint: %s", ds->srv->site_fingerprint);
        if (!(ds->headers = curl_slist_append(ds->headers, line)))
                return -ENOMEM;
        return 0;
}

static int send_batch(struct mp_devsync *ds) {
        const struct mp_config *cfg = ds->srv->cfg;
        size_t n;
        int r;

        n = ds->n_pending - ds->next;
        if (n > cfg->devsync_batch)
                n = cfg->devsync_batch;
        ds->batch_end = ds->next + n;
        r = batch_body(ds, &ds->body);
        if (r >= 0)
                r = batch_headers(ds);
        if (r >= 0 && !(ds->easy = curl_easy_init()))
                r = -ENOMEM;
        if (r < 0) {
                easy_drop(ds);
                return r;
        }
        ds->errbuf[0] = 0;
        (void)curl_easy_setopt(ds->easy, CURLOPT_URL, cfg->devsync_url);
        (void)curl_easy_setopt(ds->easy, CURLOPT_PROTOCOLS_STR, "https");
        (void)curl_easy_setopt(ds->easy, CURLOPT_POSTFIELDS, ds->body);
        (void)curl_easy_setopt(ds->easy, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)strlen(ds->body));
        (void)curl_easy_setopt(ds->easy, CURLOPT_HTTPHEADER, ds->headers);
        (void)curl_easy_setopt(ds->easy, CURLOPT_USERAGENT, "tether-mp device sync");
        (void)curl_easy_setopt(ds->easy, CURLOPT_TIMEOUT, DEVSYNC_TIMEOUT_SECONDS);
        (void)curl_easy_setopt(ds->easy, CURLOPT_NOSIGNAL, 1L);
        (void)curl_easy_setopt(ds->easy, CURLOPT_ERRORBUFFER, ds->errbuf);
        if (cfg->devsync_ca_file)
                (void)curl_easy_setopt(ds->easy, CURLOPT_CAINFO, cfg->devsync_ca_file);
        log_info("Batching %zu records", n);
        if (curl_multi_add_handle(ds->multi, ds->easy) != CURLM_OK) {
                easy_drop(ds);
                return -ENOMEM;
        }
        return 0;
}

static void batch_accepted(struct mp_devsync *ds, long code) {
        int r = 0;

        for (size_t i = ds->next; i < ds->batch_end && r >= 0; i++)
                r = json_object_object_add(ds->sent, ds->pending[i].client_id,
                                           json_object_new_string(ds->pending[i].digest));
        if (r >= 0)
                r = state_save(ds);
        if (r < 0)
                log_warning_errno(r, "Device sync: cannot write %s (%m): these records will be sent again",
                                  ds->state_path);
        log_info("Device sync: %zu records accepted by %s (HTTP %ld)", ds->batch_end - ds->next,
                 ds->srv->cfg->devsync_url, code);
        ds->next = ds->batch_end;
        ds->backoff_usec = 0;
}

static void batch_done(struct mp_devsync *ds, CURLcode result) {
        long code = 0;
        int r;

        (void)curl_easy_getinfo(ds->easy, CURLINFO_RESPONSE_CODE, &code);
        easy_drop(ds);
        if (result != CURLE_OK || code < 200 || code > 299) {
                char why[CURL_ERROR_SIZE + 32];

                if (result != CURLE_OK)
                        snprintf(why, sizeof(why), "%s",
                                 ds->errbuf[0] ? ds->errbuf : curl_easy_strerror(result));
                else
                        snprintf(why, sizeof(why), "the receiver answered HTTP %ld", code);
                log_warning(
                        "Device sync: upload of %zu records to %s failed: %s; they are kept for the next "
                        "attempt",
                        ds->batch_end - ds->next, ds->srv->cfg->devsync_url, why);
                schedule_retry(ds);
                return;
        }
        batch_accepted(ds, code);
        if (ds->next < ds->n_pending) {
                r = send_batch(ds);
                if (r < 0) {
                        log_error_errno(r, "Device sync: cannot prepare a batch: %m");
                        schedule_retry(ds);
                }
                return;
        }
        pending_clear(ds);
        schedule(ds, interval_usec(ds->srv->cfg));
}

static int on_run(sd_event_source *s, uint64_t usec, void *userdata) {
        struct mp_devsync *ds = userdata;
        int r;

        (void)s;
        (void)usec;
        if (ds->easy)
                return 0; /* a batch is in flight: its end schedules the next run */
        r = collect_changed(ds);
        if (r < 0) {
                log_warning_errno(r, "Device sync: cannot read the device records: %m");
                schedule_retry(ds);
                return 0;
        }
        if (ds->n_pending == 0) {
                log_info("Device sync: no device record changed since the last upload");
                schedule(ds, interval_usec(ds->srv->cfg));
                return 0;
        }
        r = send_batch(ds);
        if (r < 0) {
                log_error_errno(r, "Device sync: cannot prepare a batch: %m");
                schedule_retry(ds);
        }
        return 0;
}

/* ---- lifetime ---- */

int mp_devsync_new(struct mp_server *srv, struct mp_devsync **ret) {
        const struct mp_config *cfg = srv->cfg;
        struct mp_devsync *ds;

        *ret = NULL;
        if (!cfg->devsync_url || !*cfg->devsync_url)
                return 0;
        if (strncasecmp(cfg->devsync_url, "https://", 8) != 0)
                return log_error_errno(-EINVAL, "DeviceSyncURL=%s: only https:// URLs are allowed",
                                       cfg->devsync_url);
        if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK)
                return log_error_errno(-ENOMEM, "Device sync: cannot initialise libcurl");
        ds = calloc(1, sizeof(*ds));
        if (!ds) {
                curl_global_cleanup();
                return -ENOMEM;
        }
        ds->srv = srv;
        ds->sent = json_object_new_object();
        ds->multi = curl_multi_init();
        if (!ds->sent || !ds->multi || asprintf(&ds->state_path, "%s/devsync.json", cfg->state_dir) < 0) {
                ds->state_path = NULL;
                mp_devsync_free(ds);
                return -ENOMEM;
        }
        (void)curl_multi_setopt(ds->multi, CURLMOPT_SOCKETFUNCTION, on_curl_socket);
        (void)curl_multi_setopt(ds->multi, CURLMOPT_SOCKETDATA, ds);
        (void)curl_multi_setopt(ds->multi, CURLMOPT_TIMERFUNCTION, on_curl_timer_change);
        (void)curl_multi_setopt(ds->multi, CURLMOPT_TIMERDATA, ds);
        state_load(ds);
        log_info("Device sync: changed device records go to %s every %llu s, %u at most per batch (%zu "
                 "known as sent)",
                 cfg->devsync_url, (unsigned long long)(interval_usec(cfg) / 1000000), cfg->devsync_batch,
                 (size_t)json_object_object_length(ds->sent));
        /* the first run comes soon after a start, then every interval */
        schedule(ds, interval_usec(cfg) < DEVSYNC_FIRST_USEC ? interval_usec(cfg) : DEVSYNC_FIRST_USEC);
        *ret = ds;
        return 0;
}

struct mp_devsync *mp_devsync_free(struct mp_devsync *ds) {
        if (!ds)
                return NULL;
        easy_drop(ds);
        if (ds->multi)
                curl_multi_cleanup(ds->multi);
        for (size_t i = 0; i < ds->n_sources; i++)
                sd_event_source_disable_unref(ds->sources[i]);
        free(ds->sources);
        sd_event_source_disable_unref(ds->curl_timer);
        sd_event_source_disable_unref(ds->run_timer);
        pending_clear(ds);
        free(ds->pending);
        json_object_put(ds->sent);
        free(ds->state_path);
        free(ds);
        curl_global_cleanup();
        return NULL;
}
