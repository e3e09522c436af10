/* SPDX-License-Identifier: Apache-2.0 */
/*
 * GET /api/v1/events: server-sent events for the console's live views.
 *
 *   event: device   {"client_id", "online", "hostname", "status",
 *                    "offline_reason"?}   a device the caller may see came
 *                                         online, went offline or changed
 *   event: push     {"push_id"}           a push advanced (re-read it with
 *                                         GET /api/v1/pushes/ID, which is
 *                                         scope-checked)
 *
 * Once a second the server compares each stream's devices (by its user's
 * grants, reloaded each time, so a changed grant or a removed account takes
 * effect at once: a removed account ends the stream) with what the stream
 * last said. Data waits in the stream's buffer. A stream with nothing to
 * send suspends its connection (else, in external-poll mode, MHD would ask
 * the content reader again at once, in a loop); new data resumes it, and
 * console_run() makes MHD send it at once. The 15-second ping resumes
 * every stream, so a reader gone away is noticed.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/log.h"
#include "mp/api.h"
#include "mp/console.h"
#include "mp/mp.h"

#define TICK_USEC 1000000ULL
#define PING_USEC (15ULL * 1000000ULL)
#define MAX_STREAMS 64
#define MAX_PENDING (1u << 20)

struct sse_stream {
        struct sse_stream *next;
        struct mp_console *con;
        char *user;
        json_object *last; /* ClientID -> the device row last sent */
        struct MHD_Connection *mc;
        char *buf;
        size_t len, off;
        size_t backlog; /* unread bytes from earlier ticks, when this tick began */
        bool dead;
        bool suspended; /* nothing to send: out of MHD's loop until there is */
};

static size_t n_streams(const struct mp_console *con) {
        size_t n = 0;

        for (const struct sse_stream *s = con->streams; s; s = s->next)
                n++;
        return n;
}

static void wake(struct sse_stream *s) {
        if (s->suspended) {
                s->suspended = false;
                MHD_resume_connection(s->mc);
        }
}

static void emit(struct sse_stream *s, const char *event, json_object *data) {
        const char *text = json_object_to_json_string_ext(data, JSON_C_TO_STRING_PLAIN);
        size_t need = strlen(event) + strlen(text) + 32;
        char *b;

        if (s->dead || !text)
                return;
        /* A reader that did not read the earlier ticks' data: end its
         * stream. One tick's own data is not capped: a stream's first view
         * holds every device it may see (10,000 devices: about 2 MiB). */
        if (s->backlog > MAX_PENDING) {
                s->dead = true;
                return;
        }
        if (s->off > 0) {
                memmove(s->buf, s->buf + s->off, s->len - s->off);
                s->len -= s->off;
                s->off = 0;
        }
        b = realloc(s->buf, s->len + need);
        if (!b) {
                s->dead = true;
                return;
        }
        s->buf = b;
        s->len += (size_t)snprintf(b + s->len, need, "event: %s\ndata: %s\n\n", event, text);
        wake(s);
}

static ssize_t on_read(void *cls, uint64_t pos, char *buf, size_t max) {
        struct sse_stream *s = cls;
        size_t n;

        (void)pos;
        if (s->off == s->len && s->dead)
                return MHD_CONTENT_READER_END_OF_STREAM;
        n = s->len - s->off < max ? s->len - s->off : max;
        if (n == 0) {
                MHD_suspend_connection(s->mc);
                s->suspended = true;
                return 0;
        }
        memcpy(buf, s->buf + s->off, n);
        s->off += n;
        return (ssize_t)n; /* 0: asked again at the next MHD_run() */
}

static void on_free(void *cls) {
        struct sse_stream *s = cls;

        for (struct sse_stream **p = &s->con->streams; *p; p = &(*p)->next)
                if (*p == s) {
                        *p = s->next;
                        break;
                }
        json_object_put(s->last);
        free(s->user);
        free(s->buf);
        free(s);
}

static bool row_changed(json_object *old, json_object *row) {
        static const char *const keys[] = {"online", "status", "hostname", "offline_reason"};

        if (!old)
                return true;
        for (size_t i = 0; i < ELEMENTSOF(keys); i++) {
                json_object *a = json_object_object_get(old, keys[i]),
                            *b = json_object_object_get(row, keys[i]);
                if (!json_object_equal(a, b))
                        return true;
        }
        return false;
}

/* Sends what changed for this stream's user since its last tick; all is
 * every device with its online state, read once for all streams. */
static void stream_tick(struct sse_stream *s, json_object *all, bool ping) {
        struct mp_server *srv = s->con->srv;
        _cleanup_(json_object_putp) json_object *rows = NULL;
        struct mp_principal *who = NULL;
        json_object *now;

        s->backlog = s->len - s->off;
        if (!all || mp_principal_load(mp_registry_store(srv->reg), s->user, &who) < 0 ||
            api_devices_filter(all, who, &rows) < 0) {
                mp_principal_free(who);
                s->dead = true;
                return;
        }
        mp_principal_free(who);
        now = json_object_new_object();
        if (!now) {
                s->dead = true;
                return;
        }
        for (size_t i = 0; i < json_object_array_length(rows); i++) {
                json_object *row = json_object_array_get_idx(rows, i);
                const char *id = json_object_get_string(json_object_object_get(row, "client_id"));

                if (row_changed(json_object_object_get(s->last, id), row))
                        emit(s, "device", row);
                json_object_object_add(now, id, json_object_get(row));
        }
        json_object_object_foreach(s->con->progress, key, val) {
                (void)key;
                emit(s, "push", val);
        }
        if (ping && !s->dead && s->len == s->off) {
                json_object *empty = json_object_new_object();
                if (empty)
                        emit(s, "ping", empty);
                json_object_put(empty);
        }
        json_object_put(s->last);
        s->last = now;
}

/* A device back online has no offline reason any more. */
static void forget_online(struct mp_console *con) {
        uint64_t now = mp_now_usec();
        char *ids[64];
        size_t n = 0;

        json_object_object_foreach(con->offline_reasons, id, val) {
                struct mp_session *s = mp_session_find(con->srv, id);
                (void)val;
                if (s && mp_session_online(con->srv, s, now) && n < ELEMENTSOF(ids))
                        ids[n++] = id;
        }
        for (size_t i = 0; i < n; i++)
                json_object_object_del(con->offline_reasons, ids[i]);
}

static int on_tick(sd_event_source *src, uint64_t usec, void *userdata) {
        struct mp_console *con = userdata;
        _cleanup_(json_object_putp) json_object *all = NULL;
        bool ping = usec - con->last_ping_usec >= PING_USEC;

        if (ping)
                con->last_ping_usec = usec;
        forget_online(con);
        /* the records are read once a tick for every stream; a failure
         * (database down) ends the streams, which the browsers reopen */
        if (con->streams && api_devices_all(con->srv, &all) < 0)
                all = NULL;
        for (struct sse_stream *s = con->streams; s; s = s->next) {
                stream_tick(s, all, ping);
                if (s->dead)
                        wake(s); /* to end it */
        }
        json_object_put(con->progress);
        con->progress = json_object_new_object();
        (void)sd_event_source_set_time(src, usec + TICK_USEC);
        if (con->streams)
                console_run(con);
        return 0;
}

int api_events(struct api_req *q) {
        struct mp_console *con = q->con;
        struct MHD_Response *resp;
        struct sse_stream *s;

        if (n_streams(con) >= MAX_STREAMS)
                return api_error(q, 503, "too many live views open; close one and retry");
        s = calloc(1, sizeof(*s));
        if (!s || !(s->user = strdup(q->user))) {
                free(s);
                return -ENOMEM;
        }
        s->con = con;
        s->mc = q->mc;
        resp = MHD_create_response_from_callback(MHD_SIZE_UNKNOWN, 16384, on_read, s, on_free);
        if (!resp) {
                free(s->user);
                free(s);
                return -ENOMEM;
        }
        s->next = con->streams;
        con->streams = s;
        /* the first tick sends every device */
        {
                _cleanup_(json_object_putp) json_object *all = NULL;
                if (api_devices_all(con->srv, &all) < 0)
                        all = NULL;
                stream_tick(s, all, false);
        }
        (void)MHD_add_response_header(resp, "Content-Type", "text/event-stream");
        return api_queue(q, 200, resp);
}

void mp_console_push_progress(struct mp_console *con, uint64_t push_id) {
        char key[32];

        if (!con || !con->progress)
                return;
        snprintf(key, sizeof(key), "%llu", (unsigned long long)push_id);
        json_object *o = json_object_new_object();
        if (!o)
                return;
        json_object_object_add(o, "push_id", json_object_new_int64((int64_t)push_id));
        json_object_object_add(con->progress, key, o);
}

void mp_console_device_offline(struct mp_console *con, const char *client_id, const char *reason,
                               bool weak) {
        if (!con || !con->offline_reasons)
                return;
        if (weak && json_object_object_get_ex(con->offline_reasons, client_id, NULL))
                return;
        json_object_object_add(con->offline_reasons, client_id, json_object_new_string(reason));
}

int console_events_init(struct mp_console *con) {
        con->offline_reasons = json_object_new_object();
        con->progress = json_object_new_object();
        if (!con->offline_reasons || !con->progress)
                return -ENOMEM;
        int r = sd_event_add_time_relative(con->srv->event, &con->sse_timer, CLOCK_MONOTONIC, TICK_USEC,
                                           100000, on_tick, con);
        if (r >= 0)
                r = sd_event_source_set_enabled(con->sse_timer, SD_EVENT_ON);
        return r;
}

void console_events_stop(struct mp_console *con) {
        /* MHD_stop_daemon() with a suspended connection is not allowed */
        for (struct sse_stream *s = con->streams; s; s = s->next) {
                s->dead = true;
                wake(s);
        }
}

void console_events_done(struct mp_console *con) {
        con->sse_timer = sd_event_source_disable_unref(con->sse_timer);
        json_object_put(con->offline_reasons);
        json_object_put(con->progress);
        con->offline_reasons = con->progress = NULL;
}
