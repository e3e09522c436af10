/* SPDX-License-Identifier: Apache-2.0 */
/*
 * One TLS-over-TCP link once it is up: reading frames (with a budget per
 * dispatch and a deadline per frame) and writing the queue (with a deadline
 * for progress). See channel-tcp.c for connecting and keepalive.
 */
#include <errno.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "agent/channel-internal.h"
#include "common/cleanup.h"
#include "common/log.h"
#include "transport/frame.h"
#include "transport/message.h"
#include "transport/tls.h"
#include "agent/channel-tcp.h"

/* ---- the session: reading ---- */

static int on_frame_deadline(sd_event_source *s, uint64_t usec, void *userdata) {
        struct tcp_link *link = userdata;
        char dur[32];

        snprintf(link->detail, sizeof(link->detail),
                 "Protocol error from %s: a frame did not arrive whole within %s", link->peer,
                 format_duration(link->ch->timing.frame_usec, dur, sizeof(dur)));
        link_protocol_error(link);
        return 0;
}

/* Feeds one chunk to the decoder and delivers every whole frame. Returns 0,
 * 1 when the link was torn down by a callback (do not touch it), or a
 * negative errno with detail set. */
static int feed_chunk(struct tcp_link *link, const uint8_t *data, size_t len) {
        struct tether_channel *ch = link->ch;
        size_t off = 0;
        int r;

        while (off < len) {
                struct tether_frame *frame = NULL;
                struct tether_diag diag = {};
                size_t consumed = 0;

                r = tether_frame_decoder_feed(link->decoder, data + off, len - off, &consumed, &frame,
                                              &diag);
                if (r < 0) {
                        snprintf(link->detail, sizeof(link->detail), "Protocol error from %s: %s",
                                 link->peer, r == -EBADMSG && diag.text[0] ? diag.text : strerror(-r));
                        return r;
                }
                off += consumed;
                if (r == 0)
                        break;

                /* A whole frame: it answers any outstanding KEEPALIVE, and
                 * its deadline is over. */
                disarm_timer(link->frame_timer);
                link->frame_timer_armed = false;
                link->keepalive_unanswered_since = 0;
                if (!channel_deliver_frame(ch, frame))
                        return 1;
        }

        if (tether_frame_decoder_partial(link->decoder) && !link->frame_timer_armed) {
                r = arm_timer(link, &link->frame_timer, ch->timing.frame_usec, on_frame_deadline);
                if (r < 0) {
                        snprintf(link->detail, sizeof(link->detail), "Failed to arm the frame deadline: %s",
                                 strerror(-r));
                        return r;
                }
                link->frame_timer_armed = true;
        }
        return 0;
}

/* Returns 0, 1 when the link is gone, or a negative errno with detail set
 * (-EPROTO for a protocol error). */
static int do_read(struct tcp_link *link) {
        uint8_t buf[READ_CHUNK];
        int r;

        for (unsigned i = 0; i < READ_BUDGET; i++) {
                enum tether_tls_want want = TETHER_TLS_WANT_NONE;
                ssize_t n = tether_tls_read(link->tls, buf, sizeof(buf), &want);

                if (n == -EAGAIN) {
                        link->read_want = want;
                        return 0;
                }
                link->read_want = TETHER_TLS_WANT_NONE;
                if (n == 0) {
                        snprintf(link->detail, sizeof(link->detail), "Connection closed by %s", link->peer);
                        return -ECONNRESET;
                }
                if (n == -ECONNRESET) {
                        /* Closed without close_notify, or reset. */
                        const char *why = tether_tls_conn_error(link->tls);
                        bool has_why = why && *why;
                        snprintf(link->detail, sizeof(link->detail), "Connection closed by %s%s%s%s",
                                 link->peer, has_why ? " (" : "", has_why ? why : "", has_why ? ")" : "");
                        return -ECONNRESET;
                }
                if (n < 0) {
                        const char *why = tether_tls_conn_error(link->tls);
                        snprintf(link->detail, sizeof(link->detail), "Failed to read from %s: %s",
                                 link->peer, why && *why ? why : strerror((int)-n));
                        return (int)n;
                }
                r = feed_chunk(link, buf, (size_t)n);
                if (r < 0)
                        return r == -EBADMSG ? -EPROTO : r;
                if (r > 0)
                        return 1;
        }

        /* Budget spent with input possibly left (in the socket, or inside
         * OpenSSL where poll cannot see it): continue on the next loop
         * iteration. */
        r = sd_event_source_set_enabled(link->more_input, SD_EVENT_ONESHOT);
        if (r < 0) {
                snprintf(link->detail, sizeof(link->detail), "Failed to schedule reading: %s", strerror(-r));
                return r;
        }
        return 0;
}

/* ---- the session: writing ---- */

int on_write_deadline(sd_event_source *s, uint64_t usec, void *userdata) {
        struct tcp_link *link = userdata;
        char dur[32];

        snprintf(link->detail, sizeof(link->detail), "Writing to %s made no progress for %s", link->peer,
                 format_duration(link->ch->timing.write_usec, dur, sizeof(dur)));
        link_fail(link, -ETIMEDOUT, false);
        return 0;
}

/* Writes as much of the queue as the socket takes. Returns 0 or a negative
 * errno with detail set. */
int do_write(struct tcp_link *link) {
        int r;

        while (link->out_head) {
                struct outbuf *b = link->out_head;
                enum tether_tls_want want = TETHER_TLS_WANT_NONE;
                /* Retries pass the same pointer and length, as OpenSSL wants. */
                ssize_t n = tether_tls_write(link->tls, b->data + b->off, b->len - b->off, &want);

                if (n == -EAGAIN) {
                        link->write_want = want;
                        return 0;
                }
                if (n < 0) {
                        const char *why = tether_tls_conn_error(link->tls);
                        snprintf(link->detail, sizeof(link->detail), "Failed to write to %s: %s", link->peer,
                                 why && *why ? why : strerror((int)-n));
                        return (int)n;
                }
                link->write_want = TETHER_TLS_WANT_NONE;
                b->off += (size_t)n;
                link->out_bytes -= (size_t)n;
                if (b->off == b->len) {
                        link->out_head = b->next;
                        if (!link->out_head)
                                link->out_tail = &link->out_head;
                        free(b);
                }
                /* Progress: the deadline starts over. */
                if (link->out_head) {
                        r = arm_timer(link, &link->write_timer, link->ch->timing.write_usec,
                                      on_write_deadline);
                        if (r < 0) {
                                snprintf(link->detail, sizeof(link->detail),
                                         "Failed to arm the write deadline: %s", strerror(-r));
                                return r;
                        }
                }
        }
        disarm_timer(link->write_timer);
        link->write_want = TETHER_TLS_WANT_NONE;
        return 0;
}

/* A write inside tcp_link_send failed: the failure is reported from the
 * loop, since the caller of send may still hold the link. */
int on_fail_later(sd_event_source *s, void *userdata) {
        struct tcp_link *link = userdata;

        link_fail(link, link->send_error, false);
        return 0;
}

int on_more_input(sd_event_source *s, void *userdata) {
        struct tcp_link *link = userdata;
        int r;

        r = do_read(link);
        if (r > 0)
                return 0;
        if (r < 0) {
                if (r == -EPROTO)
                        link_protocol_error(link);
                else
                        link_fail(link, r, false);
                return 0;
        }
        r = update_io_events(link);
        if (r < 0) {
                snprintf(link->detail, sizeof(link->detail), "Failed to watch %s: %s", link->peer,
                         strerror(-r));
                link_fail(link, r, false);
        }
        return 0;
}

int on_io(sd_event_source *s, int fd, uint32_t revents, void *userdata) {
        struct tcp_link *link = userdata;
        int r;

        switch (link->phase) {
        case TCP_PHASE_CONNECTING: {
                int error = 0;
                socklen_t len = sizeof(error);

                if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &error, &len) < 0)
                        error = errno;
                if (error != 0) {
                        link->last_connect_error = -error;
                        r = connect_next(link);
                } else
                        r = start_handshake(link);
                if (r < 0)
                        link_fail(link, r, true);
                return 0;
        }
        case TCP_PHASE_HANDSHAKE:
                r = step_handshake(link);
                if (r < 0) {
                        /* A failed verification is no reason to try HTTPS:
                         * the same MP key would fail there too. */
                        link_fail(link, r, r != -EPERM);
                        return 0;
                }
                if (r > 0)
                        channel_tcp_up(link->ch, link);
                return 0;
        case TCP_PHASE_UP:
                break;
        }

        if (link->out_head) {
                r = do_write(link);
                if (r < 0) {
                        link_fail(link, r, false);
                        return 0;
                }
        }
        r = do_read(link);
        if (r > 0)
                return 0; /* torn down by a callback */
        if (r < 0) {
                if (r == -EPROTO)
                        link_protocol_error(link);
                else
                        link_fail(link, r, false);
                return 0;
        }
        r = update_io_events(link);
        if (r < 0) {
                snprintf(link->detail, sizeof(link->detail), "Failed to watch %s: %s", link->peer,
                         strerror(-r));
                link_fail(link, r, false);
        }
        return 0;
}
