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
#include "transport/message-internal.h"
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

const char *tether_msg_root_name(uint8_t type) {
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
        r = tether_xml_read(body, len, tether_msg_root_name(type), &doc, diag);
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
