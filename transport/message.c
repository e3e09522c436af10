/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The message codec of PROTOCOL-v1 section 3 (see message.h).
 *
 * The builder writes compact XML (no declaration, no whitespace between
 * elements) so that a body is reproducible byte for byte from its struct;
 * the vectors rely on that. The parser accepts any well-formed document of
 * the right shape: unknown elements and attributes are ignored, required
 * ones must be present exactly once.
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
#include "transport/sign.h"
#include "transport/xml.h"

static void xml_free_docp(xmlDoc **p) {
        if (*p)
                xmlFreeDoc(*p);
}

static void xml_freep(xmlChar **p) {
        if (*p)
                xmlFree(*p);
}

/* ---- names ---------------------------------------------------------- */

static const char *const root_names[] = {
        [TETHER_FRAME_SIGNIN] = "BgbSignInMessage",
        [TETHER_FRAME_SIGNIN_CONFIRM] = "BgbSignInConfirmMessage",
        [TETHER_FRAME_PUSH] = "BgbRequestMessage",
        [TETHER_FRAME_PUSH_ACK] = "BgbAckMessage",
        [TETHER_FRAME_RESPONSE] = "BgbResponseMessage",
        [TETHER_FRAME_RESPONSE_ACK] = "BgbAckMessage",
        [TETHER_FRAME_KEEPALIVE] = "BgbKeepAliveMessage",
        [TETHER_FRAME_GOODBYE] = "BgbGoodbyeMessage",
};

static const char *root_name(uint8_t type) {
        if (type >= ELEMENTSOF(root_names))
                return NULL;
        return root_names[type];
}

static const char *const goodbye_names[] = {
        [TETHER_GOODBYE_SHUTDOWN] = "shutdown",         [TETHER_GOODBYE_CONFLICT] = "conflict",
        [TETHER_GOODBYE_UNAUTHORIZED] = "unauthorized", [TETHER_GOODBYE_PROTOCOL_ERROR] = "protocol-error",
        [TETHER_GOODBYE_OVERLOADED] = "overloaded",
};

static const char *const status_names[] = {
        [TETHER_SIGNIN_APPROVED] = "Approved",
        [TETHER_SIGNIN_PENDING] = "Pending",
        [TETHER_SIGNIN_REJECTED] = "Rejected",
};

const char *tether_goodbye_reason_name(enum tether_goodbye_reason r) {
        if ((unsigned)r >= ELEMENTSOF(goodbye_names) || !goodbye_names[r])
                return "unknown";
        return goodbye_names[r];
}

const char *tether_signin_status_name(enum tether_signin_status s) {
        if ((unsigned)s >= ELEMENTSOF(status_names) || !status_names[s])
                return "unknown";
        return status_names[s];
}

/* Index in table of the exact name, or -1. */
static int lookup_name(const char *const *table, size_t n, const char *name) {
        for (size_t i = 0; i < n; i++)
                if (table[i] && strcmp(table[i], name) == 0)
                        return (int)i;
        return -1;
}

/* ---- allocation ----------------------------------------------------- */

int tether_msg_new(uint8_t type, struct tether_msg **ret) {
        struct tether_msg *m;

        if (!ret || !tether_frame_type_valid(type))
                return -EINVAL;
        m = calloc(1, sizeof(*m));
        if (!m)
                return -ENOMEM;
        m->type = type;
        *ret = m;
        return 0;
}

struct tether_msg *tether_msg_free(struct tether_msg *msg) {
        if (!msg)
                return NULL;
        switch (msg->type) {
        case TETHER_FRAME_SIGNIN:
                free(msg->signin.version);
                free(msg->signin.hostname);
                free(msg->signin.public_key);
                free(msg->signin.enrolment_token);
                free(msg->signin.rollover.previous_public_key);
                free(msg->signin.rollover.signature);
                break;
        case TETHER_FRAME_SIGNIN_CONFIRM:
                free(msg->signin_confirm.site_public_key);
                for (unsigned i = 0; i < msg->signin_confirm.n_endorsements; i++) {
                        free(msg->signin_confirm.endorsements[i].public_key);
                        free(msg->signin_confirm.endorsements[i].signature);
                }
                free(msg->signin_confirm.endorsements);
                break;
        case TETHER_FRAME_PUSH:
                free(msg->push.task_param);
                break;
        case TETHER_FRAME_RESPONSE:
                free(msg->response.detail);
                break;
        default:
                break;
        }
        free(msg);
        return NULL;
}

static void tether_msg_freep(struct tether_msg **p) {
        tether_msg_free(*p);
}

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
        if ((unsigned)m->status >= ELEMENTSOF(status_names) || !status_names[m->status])
                return out_fail(o);
        out_str(o, "<BgbSignInConfirmMessage");
        out_attr_timestamp(o, "TimeStamp", m->timestamp);
        out_fmt(o, " MessageVersion=\"%" PRIu32 "\">", m->message_version);
        out_elem_text(o, "Status", status_names[m->status]);
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
        if ((unsigned)m->reason >= ELEMENTSOF(goodbye_names) || !goodbye_names[m->reason])
                return out_fail(o);
        out_str(o, "<BgbGoodbyeMessage");
        out_attr(o, "Reason", goodbye_names[m->reason]);
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

/* ---- parser --------------------------------------------------------- */

/* The text of the required element name of parent. */
static int req_text(xmlNode *parent, const char *name, char **ret, struct tether_diag *diag) {
        xmlNode *n = NULL;
        int r;

        r = tether_xml_child(parent, name, &n, diag);
        if (r < 0)
                return r;
        if (r == 0)
                return tether_diag_set(diag, TETHER_DIAG_MISSING_ELEMENT, "missing required element '%s'",
                                       name);
        return tether_xml_text(n, ret);
}

/* Like req_text; returns 0 and leaves *ret NULL when the element is absent. */
static int opt_text(xmlNode *parent, const char *name, char **ret, struct tether_diag *diag) {
        xmlNode *n = NULL;
        int r;

        r = tether_xml_child(parent, name, &n, diag);
        if (r <= 0)
                return r;
        return tether_xml_text(n, ret);
}

static int check_number(const char *what, const char *name, const char *text, uint64_t min, uint64_t max,
                        uint64_t *ret, struct tether_diag *diag) {
        if (parse_u64(text, min, max, ret) < 0)
                return tether_diag_set(diag, TETHER_DIAG_BAD_NUMBER,
                                       "%s '%s' is not a decimal number in [%" PRIu64 ", %" PRIu64 "]", what,
                                       name, min, max);
        return 0;
}

static int req_number(xmlNode *parent, const char *name, uint64_t min, uint64_t max, uint64_t *ret,
                      struct tether_diag *diag) {
        _cleanup_(freep) char *t = NULL;
        int r;

        r = req_text(parent, name, &t, diag);
        if (r < 0)
                return r;
        return check_number("element", name, t, min, max, ret, diag);
}

static int check_guid(const char *what, const char *name, const char *text, char ret[TETHER_GUID_LEN],
                      struct tether_diag *diag) {
        if (!tether_guid_valid(text))
                return tether_diag_set(diag, TETHER_DIAG_BAD_GUID, "%s '%s' is not an uppercase GUID", what,
                                       name);
        memcpy(ret, text, TETHER_GUID_LEN);
        return 0;
}

static int req_guid(xmlNode *parent, const char *name, char ret[TETHER_GUID_LEN], struct tether_diag *diag) {
        _cleanup_(freep) char *t = NULL;
        int r;

        r = req_text(parent, name, &t, diag);
        if (r < 0)
                return r;
        return check_guid("element", name, t, ret, diag);
}

static int check_timestamp(const char *what, const char *name, const char *text, time_t *ret,
                           struct tether_diag *diag) {
        /* tether_timestamp_format() is the exact inverse of the parser, so
         * the builder can echo whatever is accepted here. */
        if (tether_timestamp_parse(text, ret) < 0)
                return tether_diag_set(diag, TETHER_DIAG_BAD_TIMESTAMP,
                                       "%s '%s' is not a UTC timestamp YYYY-MM-DDTHH:MM:SSZ", what, name);
        return 0;
}

static int req_timestamp(xmlNode *parent, const char *name, time_t *ret, struct tether_diag *diag) {
        _cleanup_(freep) char *t = NULL;
        int r;

        r = req_text(parent, name, &t, diag);
        if (r < 0)
                return r;
        return check_timestamp("element", name, t, ret, diag);
}

/* The value of the no-namespace attribute name of node; ret owned by the
 * caller (free()). Returns 1 when present, 0 when absent. */
static int attr_text(xmlNode *node, const char *name, char **ret) {
        _cleanup_(xml_freep) xmlChar *v = NULL;
        char *s;

        v = xmlGetNoNsProp(node, BAD_CAST name);
        if (!v)
                return 0;
        s = strdup((const char *)v);
        if (!s)
                return -ENOMEM;
        *ret = s;
        return 1;
}

static int req_attr(xmlNode *node, const char *name, char **ret, struct tether_diag *diag) {
        int r;

        r = attr_text(node, name, ret);
        if (r < 0)
                return r;
        if (r == 0)
                return tether_diag_set(diag, TETHER_DIAG_MISSING_ELEMENT, "missing required attribute '%s'",
                                       name);
        return 0;
}

static int req_attr_timestamp(xmlNode *node, const char *name, time_t *ret, struct tether_diag *diag) {
        _cleanup_(freep) char *t = NULL;
        int r;

        r = req_attr(node, name, &t, diag);
        if (r < 0)
                return r;
        return check_timestamp("attribute", name, t, ret, diag);
}

/* Version 1.1: the optional KeyRollover of SIGNIN (section 7.3). */
static int parse_rollover(xmlNode *root, struct tether_key_rollover *m, struct tether_diag *diag) {
        xmlNode *n = NULL;
        int r;

        r = tether_xml_child(root, "KeyRollover", &n, diag);
        if (r <= 0)
                return r;
        r = req_text(n, "PreviousPublicKey", &m->previous_public_key, diag);
        if (r < 0)
                return r;
        return req_text(n, "Signature", &m->signature, diag);
}

/* Version 1.1: the SiteKeyEndorsement chain of SIGNIN_CONFIRM (section 7.2),
 * kept in document order. */
static int parse_endorsements(xmlNode *root, struct tether_signin_confirm *m, struct tether_diag *diag) {
        for (xmlNode *c = root->children; c; c = c->next) {
                _cleanup_(freep) char *serial = NULL, *not_before = NULL;
                struct tether_endorsement *e, *grown;
                uint64_t v;
                int r;

                if (c->type != XML_ELEMENT_NODE || c->ns ||
                    !xmlStrEqual(c->name, BAD_CAST "SiteKeyEndorsement"))
                        continue;
                if (m->n_endorsements >= TETHER_MAX_ENDORSEMENTS)
                        return tether_diag_set(diag, TETHER_DIAG_TOO_LONG,
                                               "more than %u SiteKeyEndorsement elements",
                                               TETHER_MAX_ENDORSEMENTS);
                grown = realloc(m->endorsements, (m->n_endorsements + 1) * sizeof(*grown));
                if (!grown)
                        return -ENOMEM;
                m->endorsements = grown;
                e = &grown[m->n_endorsements++];
                *e = (struct tether_endorsement){0};
                r = req_attr(c, "Serial", &serial, diag);
                if (r < 0)
                        return r;
                r = check_number("attribute", "Serial", serial, 0, UINT32_MAX, &v, diag);
                if (r < 0)
                        return r;
                e->serial = (uint32_t)v;
                r = req_attr(c, "NotBefore", &not_before, diag);
                if (r < 0)
                        return r;
                r = check_timestamp("attribute", "NotBefore", not_before, &e->not_before_time, diag);
                if (r < 0)
                        return r;
                memcpy(e->not_before, not_before, TETHER_TIMESTAMP_LEN);
                r = req_text(c, "PublicKey", &e->public_key, diag);
                if (r < 0)
                        return r;
                r = req_text(c, "Signature", &e->signature, diag);
                if (r < 0)
                        return r;
        }
        return 0;
}

static int parse_signin(xmlNode *root, struct tether_signin *m, struct tether_diag *diag) {
        _cleanup_(freep) char *client_id = NULL;
        xmlNode *caps = NULL;
        int r;

        r = req_attr_timestamp(root, "TimeStamp", &m->timestamp, diag);
        if (r < 0)
                return r;
        r = req_attr(root, "ClientID", &client_id, diag);
        if (r < 0)
                return r;
        r = check_guid("attribute", "ClientID", client_id, m->client_id, diag);
        if (r < 0)
                return r;
        r = req_attr(root, "Version", &m->version, diag);
        if (r < 0)
                return r;
        r = req_text(root, "Hostname", &m->hostname, diag);
        if (r < 0)
                return r;
        r = req_text(root, "PublicKey", &m->public_key, diag);
        if (r < 0)
                return r;
        r = tether_xml_child(root, "Capabilities", &caps, diag);
        if (r < 0)
                return r;
        if (r > 0)
                for (xmlNode *c = caps->children; c; c = c->next) {
                        _cleanup_(freep) char *t = NULL;
                        uint64_t v;

                        if (c->type != XML_ELEMENT_NODE || c->ns)
                                continue;
                        if (xmlStrEqual(c->name, BAD_CAST "Feature")) {
                                r = tether_xml_text(c, &t);
                                if (r < 0)
                                        return r;
                                if (strcmp(t, "1.1") == 0)
                                        m->feature_1_1 = true;
                                continue;
                        }
                        if (!xmlStrEqual(c->name, BAD_CAST "TaskType"))
                                continue;
                        if (m->n_task_types >= TETHER_MAX_TASK_TYPES)
                                return tether_diag_set(diag, TETHER_DIAG_TOO_LONG,
                                                       "more than %u TaskType elements in 'Capabilities'",
                                                       TETHER_MAX_TASK_TYPES);
                        r = tether_xml_text(c, &t);
                        if (r < 0)
                                return r;
                        r = check_number("element", "TaskType", t, 0, UINT32_MAX, &v, diag);
                        if (r < 0)
                                return r;
                        m->task_types[m->n_task_types++] = (uint32_t)v;
                }
        r = opt_text(root, "EnrolmentToken", &m->enrolment_token, diag);
        if (r < 0)
                return r;
        return parse_rollover(root, &m->rollover, diag);
}

static int parse_signin_confirm(xmlNode *root, struct tether_signin_confirm *m, struct tether_diag *diag) {
        _cleanup_(freep) char *version = NULL, *status = NULL;
        uint64_t v;
        int r, i;

        r = req_attr_timestamp(root, "TimeStamp", &m->timestamp, diag);
        if (r < 0)
                return r;
        r = req_attr(root, "MessageVersion", &version, diag);
        if (r < 0)
                return r;
        r = check_number("attribute", "MessageVersion", version, 0, UINT32_MAX, &v, diag);
        if (r < 0)
                return r;
        m->message_version = (uint32_t)v;
        r = req_text(root, "Status", &status, diag);
        if (r < 0)
                return r;
        i = lookup_name(status_names, ELEMENTSOF(status_names), status);
        if (i < 0)
                return tether_diag_set(diag, TETHER_DIAG_BAD_VALUE,
                                       "element 'Status' is not Approved, Pending or Rejected");
        m->status = (enum tether_signin_status)i;
        r = req_number(root, "KeepAliveSeconds", 1, 86400, &v, diag);
        if (r < 0)
                return r;
        m->keepalive_seconds = (uint32_t)v;
        r = opt_text(root, "SitePublicKey", &m->site_public_key, diag);
        if (r < 0)
                return r;
        return parse_endorsements(root, m, diag);
}

static int parse_push(xmlNode *root, struct tether_push *m, struct tether_diag *diag) {
        _cleanup_(freep) char *client_id = NULL;
        uint64_t v;
        int r;

        r = req_attr_timestamp(root, "TimeStamp", &m->timestamp, diag);
        if (r < 0)
                return r;
        r = req_number(root, "PushID", 0, UINT64_MAX, &m->push_id, diag);
        if (r < 0)
                return r;
        r = req_number(root, "TaskID", 0, UINT64_MAX, &m->task_id, diag);
        if (r < 0)
                return r;
        r = req_guid(root, "TaskGUID", m->task_guid, diag);
        if (r < 0)
                return r;
        r = req_number(root, "TaskType", 0, UINT32_MAX, &v, diag);
        if (r < 0)
                return r;
        m->task_type = (uint32_t)v;
        r = req_text(root, "TaskParam", &m->task_param, diag);
        if (r < 0)
                return r;
        r = req_timestamp(root, "Expires", &m->expires, diag);
        if (r < 0)
                return r;
        r = opt_text(root, "ClientID", &client_id, diag);
        if (r < 0)
                return r;
        if (client_id) /* present, even empty, it must be a GUID */
                return check_guid("element", "ClientID", client_id, m->client_id, diag);
        m->client_id[0] = '\0';
        return 0;
}

static int parse_ack(xmlNode *root, struct tether_ack *m, struct tether_diag *diag) {
        return req_guid(root, "TaskGUID", m->task_guid, diag);
}

static int parse_response(xmlNode *root, struct tether_response *m, struct tether_diag *diag) {
        uint64_t v;
        int r;

        r = req_attr_timestamp(root, "TimeStamp", &m->timestamp, diag);
        if (r < 0)
                return r;
        r = req_number(root, "PushID", 0, UINT64_MAX, &m->push_id, diag);
        if (r < 0)
                return r;
        r = req_number(root, "TaskID", 0, UINT64_MAX, &m->task_id, diag);
        if (r < 0)
                return r;
        r = req_number(root, "ReturnCode", TETHER_RC_SUCCESS, TETHER_RC_CANCELLED, &v, diag);
        if (r < 0)
                return r;
        m->return_code = (uint32_t)v;
        r = req_guid(root, "TaskGUID", m->task_guid, diag);
        if (r < 0)
                return r;
        r = req_guid(root, "ClientID", m->client_id, diag);
        if (r < 0)
                return r;
        /* Detail is optional on receipt (the seed's shape has none). */
        r = opt_text(root, "Detail", &m->detail, diag);
        if (r < 0)
                return r;
        if (!m->detail) {
                m->detail = strdup("");
                if (!m->detail)
                        return -ENOMEM;
        }
        if (strlen(m->detail) > TETHER_DETAIL_MAX)
                return tether_diag_set(diag, TETHER_DIAG_TOO_LONG,
                                       "element 'Detail' is longer than %u bytes", TETHER_DETAIL_MAX);
        return 0;
}

static int parse_keepalive(xmlNode *root, struct tether_keepalive *m, struct tether_diag *diag) {
        return req_attr_timestamp(root, "TimeStamp", &m->timestamp, diag);
}

static int parse_goodbye(xmlNode *root, struct tether_goodbye *m, struct tether_diag *diag) {
        _cleanup_(freep) char *reason = NULL, *retry = NULL;
        uint64_t v = 0;
        int r, i;

        r = req_attr(root, "Reason", &reason, diag);
        if (r < 0)
                return r;
        i = lookup_name(goodbye_names, ELEMENTSOF(goodbye_names), reason);
        if (i < 0)
                return tether_diag_set(diag, TETHER_DIAG_BAD_VALUE,
                                       "attribute 'Reason' is not a known reason");
        m->reason = (enum tether_goodbye_reason)i;
        /* Optional on receipt: absent means no extra wait. */
        r = attr_text(root, "RetryAfterSeconds", &retry);
        if (r < 0)
                return r;
        if (r > 0) {
                r = check_number("attribute", "RetryAfterSeconds", retry, 0, UINT32_MAX, &v, diag);
                if (r < 0)
                        return r;
        }
        m->retry_after_seconds = (uint32_t)v;
        return 0;
}

int tether_msg_parse(uint8_t type, const uint8_t *body, size_t len, struct tether_msg **ret,
                     struct tether_diag *diag) {
        _cleanup_(tether_msg_freep) struct tether_msg *m = NULL;
        _cleanup_(xml_free_docp) xmlDoc *doc = NULL;
        xmlNode *root;
        int r;

        if (!ret || (!body && len > 0))
                return -EINVAL;
        if (!tether_frame_type_valid(type))
                return tether_diag_set(diag, TETHER_DIAG_BAD_TYPE, "unknown message type %u", type);
        r = tether_xml_read(body, len, root_name(type), &doc, diag);
        if (r < 0)
                return r;
        root = xmlDocGetRootElement(doc);
        r = tether_msg_new(type, &m);
        if (r < 0)
                return r;
        switch (type) {
        case TETHER_FRAME_SIGNIN:
                r = parse_signin(root, &m->signin, diag);
                break;
        case TETHER_FRAME_SIGNIN_CONFIRM:
                r = parse_signin_confirm(root, &m->signin_confirm, diag);
                break;
        case TETHER_FRAME_PUSH:
                r = parse_push(root, &m->push, diag);
                break;
        case TETHER_FRAME_PUSH_ACK:
        case TETHER_FRAME_RESPONSE_ACK:
                r = parse_ack(root, &m->ack, diag);
                break;
        case TETHER_FRAME_RESPONSE:
                r = parse_response(root, &m->response, diag);
                break;
        case TETHER_FRAME_KEEPALIVE:
                r = parse_keepalive(root, &m->keepalive, diag);
                break;
        case TETHER_FRAME_GOODBYE:
                r = parse_goodbye(root, &m->goodbye, diag);
                break;
        default:
                r = -EINVAL;
                break;
        }
        if (r < 0)
                return r;
        *ret = TAKE_PTR(m);
        return 0;
}

/* ---- sealing and opening -------------------------------------------- */

int tether_msg_seal(const struct tether_msg *msg, const struct tether_key *signer, uint32_t max_body,
                    uint8_t **ret_frame, size_t *ret_len) {
        _cleanup_(freep) char *body = NULL;
        _cleanup_(freep) uint8_t *sig = NULL;
        size_t body_len = 0, sig_len = 0;
        int r;

        if (!msg || !ret_frame || !ret_len)
                return -EINVAL;
        if (tether_frame_type_signed(msg->type) && !signer)
                return -EINVAL;
        r = tether_msg_build(msg, &body, &body_len);
        if (r < 0)
                return r;
        if (body_len > max_body)
                return -EMSGSIZE;
        if (tether_frame_type_signed(msg->type)) {
                r = tether_sign(signer, msg->type, (const uint8_t *)body, body_len, &sig, &sig_len);
                if (r < 0)
                        return r;
        }
        return tether_frame_encode(msg->type, (const uint8_t *)body, body_len, sig, sig_len, max_body,
                                   ret_frame, ret_len);
}

int tether_msg_verify(const struct tether_frame *frame, const struct tether_key *peer_key,
                      struct tether_diag *diag) {
        int r;

        if (!frame || (!frame->body && frame->body_len > 0))
                return -EINVAL;
        if (!tether_frame_type_valid(frame->type))
                return tether_diag_set(diag, TETHER_DIAG_BAD_TYPE, "unknown message type %u", frame->type);
        if (tether_frame_type_signed(frame->type)) {
                if (frame->sig_len == 0 || !frame->sig)
                        return tether_diag_set(diag, TETHER_DIAG_MISSING_SIGNATURE, "%s frame is not signed",
                                               tether_frame_type_name(frame->type));
                if (!peer_key)
                        return -EINVAL;
                /* Nothing of the body is looked at before this passes. */
                r = tether_verify(peer_key, frame->type, frame->body, frame->body_len, frame->sig,
                                  frame->sig_len);
                if (r == -EBADMSG)
                        return tether_diag_set(diag, TETHER_DIAG_BAD_SIGNATURE,
                                               "%s signature does not verify with the peer's key",
                                               tether_frame_type_name(frame->type));
                if (r < 0)
                        return r;
        }
        return 0;
}

int tether_msg_open(const struct tether_frame *frame, const struct tether_key *peer_key,
                    struct tether_msg **ret, struct tether_diag *diag) {
        int r;

        if (!ret)
                return -EINVAL;
        r = tether_msg_verify(frame, peer_key, diag);
        if (r < 0)
                return r;
        return tether_msg_parse(frame->type, frame->body, frame->body_len, ret, diag);
}
