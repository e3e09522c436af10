/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The privsep IPC decoder (agent/privsep.c priv_msg_check), as the root
 * half receives packets from the channel process and the channel process
 * from the root half. Input byte 0 picks the receiving side; the rest is
 * one packet.
 * Invariants: nothing outside the packet is read (ASan); an accepted
 * message has its tails inside the packet, NUL-free where they are text,
 * a cycle and result in range, and survives a rebuild with the builders
 * and a second check with the same fields.
 */
#include <stdlib.h>
#include <string.h>

#include "agent/privsep.h"
#include "scheduler/scheduler.h"

static void same_tail(const struct priv_msg *a, const struct priv_msg *b) {
        if (a->data_len != b->data_len || (a->data_len && memcmp(a->data, b->data, a->data_len) != 0) ||
            a->data2_len != b->data2_len || (a->data2_len && memcmp(a->data2, b->data2, a->data2_len) != 0))
                abort();
}

/* Rebuilds m with the builders and checks the result again. */
static void round_trip(enum priv_side side, const struct priv_msg *m) {
        uint8_t *buf = NULL;
        size_t len = 0;
        char *text = NULL;
        struct priv_msg m2;
        int r = -1;

        if (m->data_len > 0 && (m->type == PRIV_RUN || m->type == PRIV_DONE || m->type == PRIV_STATUS)) {
                if (memchr(m->data, 0, m->data_len))
                        abort(); /* text tails never carry a NUL */
        }
        text = strndup(m->data ? (const char *)m->data : "", m->data ? m->data_len : 0);
        if (!text)
                abort();
        switch (m->type) {
        case PRIV_RUN:
                r = priv_build_run(m->run.cycle, m->run.task_guid, text, &buf, &len);
                break;
        case PRIV_DONE:
                r = priv_build_done(m->done.cycle, m->done.task_guid, m->done.return_code, text, &buf, &len);
                break;
        case PRIV_POLICY:
                r = priv_build_policy(m->policy.user, m->policy.result, m->policy.error, m->data,
                                      m->data_len, m->data2, m->data2_len, &buf, &len);
                break;
        case PRIV_SITE_KEY:
                r = priv_build_site_key(m->data, m->data_len, &buf, &len);
                break;
        case PRIV_SITE_CHAIN:
                r = priv_build_site_chain((const char *)m->data, m->data_len, &buf, &len);
                break;
        case PRIV_STATUS:
                r = priv_build_status(text, &buf, &len);
                break;
        case PRIV_POLICY_REQUEST:
                r = priv_build_policy_request(m->policy_request.user, &buf, &len);
                break;
        case PRIV_PING:
        case PRIV_PONG:
                r = priv_build_ping(m->type, m->ping.seq, &buf, &len);
                break;
        default:
                abort();
        }
        free(text);
        if (r < 0)
                abort(); /* whatever was accepted can be built again */
        if (priv_msg_check(side, buf, len, &m2) < 0 || m2.type != m->type)
                abort();
        same_tail(m, &m2);
        free(buf);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
        enum priv_side side;
        struct priv_msg m;
        uint8_t *pkt;

        if (size < 1)
                return 0;
        side = (data[0] & 1) ? PRIV_SIDE_CHANNEL : PRIV_SIDE_SCHEDULER;
        /* A copy of exactly the packet, so that ASan sees any read past it. */
        pkt = malloc(size - 1 ? size - 1 : 1);
        if (!pkt)
                return 0;
        memcpy(pkt, data + 1, size - 1);
        if (priv_msg_check(side, pkt, size - 1, &m) == 0) {
                if (m.data && (m.data < pkt || m.data + m.data_len > pkt + size - 1))
                        abort();
                if (m.data2 && (m.data2 < pkt || m.data2 + m.data2_len > pkt + size - 1))
                        abort();
                if ((m.type == PRIV_RUN && (m.run.cycle < 1 || m.run.cycle > TETHER_TASK_TYPE_MAX)) ||
                    (m.type == PRIV_POLICY && (m.policy.result > TETHER_POLICY_ERROR || m.policy.error > 0)))
                        abort();
                round_trip(side, &m);
        }
        free(pkt);
        return 0;
}
