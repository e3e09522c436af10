/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The message builder of PROTOCOL-v1 section 3 (see message.h): compact XML
 * (no declaration, no whitespace between elements), so that a body is
 * reproducible byte for byte from its struct; the vectors rely on that.
 */

#include <errno.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <libxml/tree.h>

#include "common/cleanup.h"
#include "common/strutil.h"
#include "transport/message.h"
#include "transport/message-internal.h"
#include "transport/sign.h"
#include "transport/xml.h"

/* ---- builder -------------------------------------------------------- */

struct out {
        char *buf;
        size_t len, cap;
        int error; /* first error, sticky */
};

static void out_reserve(struct out *o, size_t more) {
        size_t want;
        char *n;

        if (o->error)
                return;
        if (more > SIZE_MAX - o->len - 1) {
                o->error = -ENOMEM;
                return;
        }
        want = o->len + more + 1;
        if (want <= o->cap)
                return;
        if (want < 256)
                want = 256;
        if (want < o->cap * 2)
                want = o->cap * 2;
        n = realloc(o->buf, want);
        if (!n) {
                o->error = -ENOMEM;
                return;
        }
        o->buf = n;
        o->cap = want;
}

static void out_raw(struct out *o, const char *s, size_t n) {
        out_reserve(o, n);
        if (o->error)
                return;
        memcpy(o->buf + o->len, s, n);
        o->len += n;
        o->buf[o->len] = '\0';
}

static void out_str(struct out *o, const char *s) {
        out_raw(o, s, strlen(s));
}

static void out_fmt(struct out *o, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void out_fmt(struct out *o, const char *fmt, ...) {
        char tmp[128];
        va_list ap;
        int n;

        va_start(ap, fmt);
        n = vsnprintf(tmp, sizeof(tmp), fmt, ap);
        va_end(ap);
        if (n < 0 || (size_t)n >= sizeof(tmp)) {
                if (!o->error)
                        o->error = -EINVAL;
                return;
        }
        out_raw(o, tmp, (size_t)n);
}

/*
 * Escaped text or attribute value. Refuses what XML 1.0 cannot carry at
 * all (invalid UTF-8, control characters other than tab, LF and CR,
 * U+FFFE, U+FFFF). CR is written as a character reference so that it
 * survives end-of-line normalisation; in attributes tab and LF are too, so
 * that they survive attribute-value normalisation.
 */
static void out_escaped(struct out *o, const char *s, bool attribute) {
        size_t n = strlen(s);

        if (o->error)
                return;
        if (!utf8_is_valid((const uint8_t *)s, n)) {
                o->error = -EINVAL;
                return;
        }
        for (size_t i = 0; i < n; i++) {
                unsigned char c = (unsigned char)s[i];

                if (c < 0x20 && c != '\t' && c != '\n' && c != '\r') {
                        o->error = -EINVAL;
                        return;
                }
                if (c == 0xEF && i + 2 < n && (unsigned char)s[i + 1] == 0xBF &&
                    ((unsigned char)s[i + 2] == 0xBE || (unsigned char)s[i + 2] == 0xBF)) {
                        o->error = -EINVAL;
                        return;
                }
                switch (c) {
                case '&':
                        out_str(o, "&amp;");
                        break;
                case '<':
                        out_str(o, "&lt;");
                        break;
                case '>':
                        out_str(o, "&gt;");
                        break;
                case '\r':
                        out_str(o, "&#13;");
                        break;
                case '"':
                        out_str(o, attribute ? "&quot;" : "\"");
                        break;
                case '\t':
                        out_str(o, attribute ? "&#9;" : "\t");
                        break;
                case '\n':
                        out_str(o, attribute ? "&#10;" : "\n");
                        break;
                default:
                        out_raw(o, (const char *)&s[i], 1);
                        break;
                }
        }
}

static void out_attr(struct out *o, const char *name, const char *value) {
        out_str(o, " ");
        out_str(o, name);
        out_str(o, "=\"");
        out_escaped(o, value, true);
        out_str(o, "\"");
}

static void out_attr_timestamp(struct out *o, const char *name, time_t t) {
        char ts[TETHER_TIMESTAMP_LEN];
        int r;

        r = tether_timestamp_format(t, ts);
        if (r < 0) {
                if (!o->error)
                        o->error = -EINVAL;
                return;
        }
        out_attr(o, name, ts);
}

static void out_elem_text(struct out *o, const char *name, const char *value) {
        out_fmt(o, "<%s>", name);
        out_escaped(o, value ? value : "", false);
        out_fmt(o, "</%s>", name);
}

static void out_elem_u64(struct out *o, const char *name, uint64_t v) {
        out_fmt(o, "<%s>%" PRIu64 "</%s>", name, v, name);
}

static void out_elem_guid(struct out *o, const char *name, const char *guid) {
        if (!tether_guid_valid(guid)) {
                if (!o->error)
                        o->error = -EINVAL;
                return;
        }
        out_elem_text(o, name, guid);
}

static void out_elem_timestamp(struct out *o, const char *name, time_t t) {
        char ts[TETHER_TIMESTAMP_LEN];

        if (tether_timestamp_format(t, ts) < 0) {
                if (!o->error)
                        o->error = -EINVAL;
                return;
        }
        out_elem_text(o, name, ts);
}

static void out_fail(struct out *o) {
        if (!o->error)
                o->error = -EINVAL;
}

static void build_signin(struct out *o, const struct tether_signin *m) {
        if (!tether_guid_valid(m->client_id) || !m->version || !m->hostname || !m->public_key ||
            m->n_task_types > TETHER_MAX_TASK_TYPES)
                return out_fail(o);
        out_str(o, "<BgbSignInMessage");
        out_attr_timestamp(o, "TimeStamp", m->timestamp);
        out_attr(o, "ClientID", m->client_id);
        out_attr(o, "Version", m->version);
        out_str(o, ">");
        out_elem_text(o, "Hostname", m->hostname);
        out_elem_text(o, "PublicKey", m->public_key);
        if (m->n_task_types == 0 && !m->feature_1_1)
                out_str(o, "<Capabilities/>");
        else {
                out_str(o, "<Capabilities>");
                for (unsigned i = 0; i < m->n_task_types; i++)
                        out_elem_u64(o, "TaskType", m->task_types[i]);
                if (m->feature_1_1)
                        out_elem_text(o, "Feature", "1.1");
                out_str(o, "</Capabilities>");
        }
        if (m->enrolment_token)
                out_elem_text(o, "EnrolmentToken", m->enrolment_token);
        if (m->rollover.previous_public_key || m->rollover.signature) {
                if (!m->rollover.previous_public_key || !m->rollover.signature)
                        return out_fail(o);
                out_str(o, "<KeyRollover>");
                out_elem_text(o, "PreviousPublicKey", m->rollover.previous_public_key);
                out_elem_text(o, "Signature", m->rollover.signature);
                out_str(o, "</KeyRollover>");
        }
        out_str(o, "</BgbSignInMessage>");
}

static void build_signin_confirm(struct out *o, const struct tether_signin_confirm *m) {
        if (m->keepalive_seconds < 1 || m->keepalive_seconds > 86400)
                return out_fail(o);
        if (strcmp(tether_signin_status_name(m->status), "unknown") == 0)
                return out_fail(o);
        out_str(o, "<BgbSignInConfirmMessage");
        out_attr_timestamp(o, "TimeStamp", m->timestamp);
        out_fmt(o, " MessageVersion=\"%" PRIu32 "\">", m->message_version);
        out_elem_text(o, "Status", tether_signin_status_name(m->status));
        out_elem_u64(o, "KeepAliveSeconds", m->keepalive_seconds);
        if (m->site_public_key)
                out_elem_text(o, "SitePublicKey", m->site_public_key);
        for (unsigned i = 0; i < m->n_endorsements; i++) {
                const struct tether_endorsement *e = &m->endorsements[i];

                if (strlen(e->not_before) != TETHER_TIMESTAMP_LEN - 1 || !e->public_key || !e->signature)
                        return out_fail(o);
                out_fmt(o, "<SiteKeyEndorsement Serial=\"%" PRIu32 "\"", e->serial);
                out_attr(o, "NotBefore", e->not_before);
                out_str(o, ">");
                out_elem_text(o, "PublicKey", e->public_key);
                out_elem_text(o, "Signature", e->signature);
                out_str(o, "</SiteKeyEndorsement>");
        }
        out_str(o, "</BgbSignInConfirmMessage>");
}

static void build_push(struct out *o, const struct tether_push *m) {
        out_str(o, "<BgbRequestMessage");
        out_attr_timestamp(o, "TimeStamp", m->timestamp);
        out_str(o, ">");
        out_elem_u64(o, "PushID", m->push_id);
        out_elem_u64(o, "TaskID", m->task_id);
        out_elem_guid(o, "TaskGUID", m->task_guid);
        out_elem_u64(o, "TaskType", m->task_type);
        out_elem_text(o, "TaskParam", m->task_param ? m->task_param : "");
        out_elem_timestamp(o, "Expires", m->expires);
        if (m->client_id[0])
                out_elem_guid(o, "ClientID", m->client_id);
        out_str(o, "</BgbRequestMessage>");
}

static void build_ack(struct out *o, const struct tether_ack *m) {
        out_str(o, "<BgbAckMessage>");
        out_elem_guid(o, "TaskGUID", m->task_guid);
        out_str(o, "</BgbAckMessage>");
}

static void build_response(struct out *o, const struct tether_response *m) {
        const char *detail = m->detail ? m->detail : "";

        if (m->return_code < TETHER_RC_SUCCESS || m->return_code > TETHER_RC_CANCELLED ||
            strlen(detail) > TETHER_DETAIL_MAX)
                return out_fail(o);
        out_str(o, "<BgbResponseMessage");
        out_attr_timestamp(o, "TimeStamp", m->timestamp);
        out_str(o, ">");
        /* The seed's shape first: PushID, TaskID, ReturnCode. */
        out_elem_u64(o, "PushID", m->push_id);
        out_elem_u64(o, "TaskID", m->task_id);
        out_elem_u64(o, "ReturnCode", m->return_code);
        out_elem_guid(o, "TaskGUID", m->task_guid);
        out_elem_guid(o, "ClientID", m->client_id);
        out_elem_text(o, "Detail", detail);
        out_str(o, "</BgbResponseMessage>");
}

static void build_keepalive(struct out *o, const struct tether_keepalive *m) {
        out_str(o, "<BgbKeepAliveMessage");
        out_attr_timestamp(o, "TimeStamp", m->timestamp);
        out_str(o, "/>");
}

static void build_goodbye(struct out *o, const struct tether_goodbye *m) {
        if (strcmp(tether_goodbye_reason_name(m->reason), "unknown") == 0)
                return out_fail(o);
        out_str(o, "<BgbGoodbyeMessage");
        out_attr(o, "Reason", tether_goodbye_reason_name(m->reason));
        out_fmt(o, " RetryAfterSeconds=\"%" PRIu32 "\"/>", m->retry_after_seconds);
}

int tether_msg_build(const struct tether_msg *msg, char **ret, size_t *ret_len) {
        struct out o = {};

        if (!msg || !ret)
                return -EINVAL;
        switch (msg->type) {
        case TETHER_FRAME_SIGNIN:
                build_signin(&o, &msg->signin);
                break;
        case TETHER_FRAME_SIGNIN_CONFIRM:
                build_signin_confirm(&o, &msg->signin_confirm);
                break;
        case TETHER_FRAME_PUSH:
                build_push(&o, &msg->push);
                break;
        case TETHER_FRAME_PUSH_ACK:
        case TETHER_FRAME_RESPONSE_ACK:
                build_ack(&o, &msg->ack);
                break;
        case TETHER_FRAME_RESPONSE:
                build_response(&o, &msg->response);
                break;
        case TETHER_FRAME_KEEPALIVE:
                build_keepalive(&o, &msg->keepalive);
                break;
        case TETHER_FRAME_GOODBYE:
                build_goodbye(&o, &msg->goodbye);
                break;
        default:
                return -EINVAL;
        }
        if (o.error) {
                free(o.buf);
                return o.error;
        }
        *ret = o.buf;
        if (ret_len)
                *ret_len = o.len;
        return 0;
}
