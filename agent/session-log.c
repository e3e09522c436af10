/* SPDX-License-Identifier: Apache-2.0 */
/* The session's seed-style log lines (agent/session-log.h). */
#include "agent/session-log.h"

#include <stdio.h>
#include <string.h>

#include "common/log.h"
#include "common/strutil.h"

/* The body of an encoded frame, for the seed-style log line. */
static void frame_body(const uint8_t *frame, size_t len, const char **ret, int *ret_len) {
        size_t b, sig;

        *ret = "";
        *ret_len = 0;
        if (len < TETHER_FRAME_HEADER_SIZE)
                return;
        tether_frame_header_lengths(frame, &b, &sig);
        if (b > len - TETHER_FRAME_HEADER_SIZE)
                return;
        *ret = (const char *)frame + TETHER_FRAME_HEADER_SIZE;
        *ret_len = (int)b;
}

/* The number in <name>...</name> of our own response body, for the log's
 * fields (the body is ours: built by tether_msg_build, not untrusted). */
static void element_number(const char *body, int len, const char *name, char *out, size_t size) {
        char open_tag[32];
        const char *p, *end = body + len;
        uint64_t v;

        snprintf(open_tag, sizeof(open_tag), "<%s>", name);
        p = memmem(body, (size_t)len, open_tag, strlen(open_tag));
        out[0] = 0;
        if (!p)
                return;
        p += strlen(open_tag);
        const char *q = memchr(p, '<', (size_t)(end - p));
        if (q && parse_u64_n(p, (size_t)(q - p), 0, UINT64_MAX, &v) >= 0)
                snprintf(out, size, "%llu", (unsigned long long)v);
}

void session_log_sent_response(const char *guid, uint32_t rc, const uint8_t *frame, size_t len) {
        char f_guid[64], f_rc[32], f_push[48], f_task[48], num[24];
        const char *fields[5] = {f_guid, f_rc, NULL, NULL, NULL};
        const char *body;
        size_t n = 2;
        int blen;

        snprintf(f_guid, sizeof(f_guid), "TASK_GUID=%s", guid);
        snprintf(f_rc, sizeof(f_rc), "RETURN_CODE=%u", rc);
        frame_body(frame, len, &body, &blen);
        element_number(body, blen, "PushID", num, sizeof(num));
        if (num[0]) {
                snprintf(f_push, sizeof(f_push), "PUSH_ID=%s", num);
                fields[n++] = f_push;
        }
        element_number(body, blen, "TaskID", num, sizeof(num));
        if (num[0]) {
                snprintf(f_task, sizeof(f_task), "TASK_ID=%s", num);
                fields[n++] = f_task;
        }
        log_struct(LOG_INFO, fields, "Send Task response message %.*s successfully.", blen, body);
}

void session_log_push(const struct tether_push *p) {
        char f_push[48], f_task[48], f_guid[64], f_type[32];
        const char *fields[] = {f_push, f_task, f_guid, f_type, NULL};

        snprintf(f_push, sizeof(f_push), "PUSH_ID=%llu", (unsigned long long)p->push_id);
        snprintf(f_task, sizeof(f_task), "TASK_ID=%llu", (unsigned long long)p->task_id);
        snprintf(f_guid, sizeof(f_guid), "TASK_GUID=%s", p->task_guid);
        snprintf(f_type, sizeof(f_type), "TASK_TYPE=%u", p->task_type);
        log_struct(LOG_INFO, fields,
                   "Receive task from server with pushid=%llu, taskid=%llu, taskguid=%s, tasktype=%u and "
                   "taskParam=%s",
                   (unsigned long long)p->push_id, (unsigned long long)p->task_id, p->task_guid,
                   p->task_type, p->task_param ? p->task_param : "");
}
