/* SPDX-License-Identifier: Apache-2.0 */
#include "agent/privsep.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>

#include "common/strutil.h"
#include "common/tasktype.h"
#include "transport/policy-answer.h"

static bool allowed(enum priv_side side, uint32_t type) {
        switch (type) {
        case PRIV_RUN:
        case PRIV_POLICY:
        case PRIV_SITE_KEY:
        case PRIV_STATUS:
        case PRIV_SITE_CHAIN:
                return side == PRIV_SIDE_SCHEDULER;
        case PRIV_DONE:
        case PRIV_POLICY_REQUEST:
                return side == PRIV_SIDE_CHANNEL;
        case PRIV_PING:
        case PRIV_PONG:
                return true;
        }
        return false;
}

static bool string_in(const char *s, size_t size) {
        return memchr(s, 0, size) != NULL;
}

static bool guid_or_empty(const char *g) {
        return string_in(g, TETHER_GUID_LEN) && (g[0] == 0 || tether_guid_valid(g));
}

/* Checks that the packet is exactly header + fixed + tail. */
static int fixed(const uint8_t *buf, size_t len, size_t fixed_size, void *dst, size_t tail) {
        size_t want = sizeof(struct priv_hdr) + fixed_size;

        if (len < want || tail > len - want || len - want != tail)
                return -EBADMSG;
        memcpy(dst, buf + sizeof(struct priv_hdr), fixed_size);
        return 0;
}

static int check_run(const uint8_t *buf, size_t len, struct priv_msg *m) {
        const size_t H = sizeof(struct priv_hdr);
        size_t tail;

        if (len < H + sizeof(m->run))
                return -EBADMSG;
        memcpy(&m->run, buf + H, sizeof(m->run));
        tail = m->run.param_len;
        if (tail > PRIV_PARAM_MAX || fixed(buf, len, sizeof(m->run), &m->run, tail) < 0)
                return -EBADMSG;
        if (m->run.cycle < 1 || m->run.cycle > TETHER_TASK_TYPE_MAX || !guid_or_empty(m->run.task_guid))
                return -EBADMSG;
        m->data = buf + H + sizeof(m->run);
        m->data_len = tail;
        if (memchr(m->data, 0, tail))
                return -EBADMSG;
        return 0;
}

static int check_done(const uint8_t *buf, size_t len, struct priv_msg *m) {
        const size_t H = sizeof(struct priv_hdr);
        size_t tail;

        if (len < H + sizeof(m->done))
                return -EBADMSG;
        memcpy(&m->done, buf + H, sizeof(m->done));
        tail = m->done.detail_len;
        if (tail > PRIV_DETAIL_MAX || fixed(buf, len, sizeof(m->done), &m->done, tail) < 0)
                return -EBADMSG;
        if (m->done.cycle < 1 || m->done.cycle > TETHER_TASK_TYPE_MAX || !guid_or_empty(m->done.task_guid) ||
            m->done.return_code < 1 || m->done.return_code > TETHER_RC_MAX)
                return -EBADMSG;
        m->data = buf + H + sizeof(m->done);
        m->data_len = tail;
        if (memchr(m->data, 0, tail))
                return -EBADMSG;
        return 0;
}

static int check_policy(const uint8_t *buf, size_t len, struct priv_msg *m) {
        const size_t H = sizeof(struct priv_hdr);
        size_t tail;

        if (len < H + sizeof(m->policy))
                return -EBADMSG;
        memcpy(&m->policy, buf + H, sizeof(m->policy));
        if (m->policy.body_len > PRIV_POLICY_MAX || m->policy.sig_len > PRIV_SIG_MAX)
                return -EBADMSG;
        tail = (size_t)m->policy.body_len + m->policy.sig_len;
        if (fixed(buf, len, sizeof(m->policy), &m->policy, tail) < 0 ||
            !string_in(m->policy.user, PRIV_USER_MAX) || m->policy.result > TETHER_POLICY_ERROR)
                return -EBADMSG;
        if (m->policy.result != TETHER_POLICY_NEW && tail != 0)
                return -EBADMSG;
        if (m->policy.result == TETHER_POLICY_NEW && m->policy.sig_len == 0)
                return -EBADMSG;
        /* A negative errno, or 0: the root half prints it. */
        if (m->policy.error > 0 || m->policy.error < -4095)
                return -EBADMSG;
        m->data = buf + H + sizeof(m->policy);
        m->data_len = m->policy.body_len;
        m->data2 = m->data + m->data_len;
        m->data2_len = m->policy.sig_len;
        return 0;
}

int priv_msg_check(enum priv_side side, const uint8_t *buf, size_t len, struct priv_msg *ret) {
        const size_t H = sizeof(struct priv_hdr);
        struct priv_hdr hdr;
        struct priv_msg m = {0};
        size_t tail;

        if (len < H)
                return -EBADMSG;
        memcpy(&hdr, buf, H);
        if (hdr.len != len || len > PRIV_MSG_MAX || !allowed(side, hdr.type))
                return -EBADMSG;
        m.type = hdr.type;

        switch (hdr.type) {
        case PRIV_RUN:
                if (check_run(buf, len, &m) < 0)
                        return -EBADMSG;
                break;
        case PRIV_DONE:
                if (check_done(buf, len, &m) < 0)
                        return -EBADMSG;
                break;
        case PRIV_POLICY_REQUEST:
                if (fixed(buf, len, sizeof(m.policy_request), &m.policy_request, 0) < 0 ||
                    !string_in(m.policy_request.user, PRIV_USER_MAX))
                        return -EBADMSG;
                break;
        case PRIV_POLICY:
                if (check_policy(buf, len, &m) < 0)
                        return -EBADMSG;
                break;
        case PRIV_SITE_KEY:
                if (len < H + sizeof(m.site_key))
                        return -EBADMSG;
                memcpy(&m.site_key, buf + H, sizeof(m.site_key));
                tail = m.site_key.der_len;
                if (tail == 0 || tail > PRIV_KEY_MAX ||
                    fixed(buf, len, sizeof(m.site_key), &m.site_key, tail) < 0)
                        return -EBADMSG;
                m.data = buf + H + sizeof(m.site_key);
                m.data_len = tail;
                break;
        case PRIV_PING:
        case PRIV_PONG:
                if (fixed(buf, len, sizeof(m.ping), &m.ping, 0) < 0)
                        return -EBADMSG;
                break;
        case PRIV_STATUS:
                if (len < H + sizeof(m.status))
                        return -EBADMSG;
                memcpy(&m.status, buf + H, sizeof(m.status));
                tail = m.status.text_len;
                if (tail > PRIV_STATUS_MAX || fixed(buf, len, sizeof(m.status), &m.status, tail) < 0)
                        return -EBADMSG;
                m.data = buf + H + sizeof(m.status);
                m.data_len = tail;
                if (memchr(m.data, 0, tail) || memchr(m.data, '\n', tail))
                        return -EBADMSG;
                break;
        case PRIV_SITE_CHAIN:
                if (len < H + sizeof(m.site_chain))
                        return -EBADMSG;
                memcpy(&m.site_chain, buf + H, sizeof(m.site_chain));
                tail = m.site_chain.text_len;
                if (tail == 0 || tail > PRIV_CHAIN_MAX ||
                    fixed(buf, len, sizeof(m.site_chain), &m.site_chain, tail) < 0)
                        return -EBADMSG;
                m.data = buf + H + sizeof(m.site_chain);
                m.data_len = tail;
                if (memchr(m.data, 0, tail))
                        return -EBADMSG;
                break;
        default:
                return -EBADMSG;
        }
        *ret = m;
        return 0;
}

static int build(uint32_t type, const void *fixed_part, size_t fixed_size, const void *tail1, size_t len1,
                 const void *tail2, size_t len2, uint8_t **ret, size_t *ret_len) {
        size_t total = sizeof(struct priv_hdr) + fixed_size + len1 + len2;
        struct priv_hdr hdr = {.type = type, .len = (uint32_t)total};
        uint8_t *buf;

        if (total > PRIV_MSG_MAX)
                return -EMSGSIZE;
        buf = malloc(total);
        if (!buf)
                return -ENOMEM;
        memcpy(buf, &hdr, sizeof(hdr));
        memcpy(buf + sizeof(hdr), fixed_part, fixed_size);
        if (len1)
                memcpy(buf + sizeof(hdr) + fixed_size, tail1, len1);
        if (len2)
                memcpy(buf + sizeof(hdr) + fixed_size + len1, tail2, len2);
        *ret = buf;
        *ret_len = total;
        return 0;
}

int priv_build_run(uint32_t cycle, const char *task_guid, const char *param, uint8_t **ret,
                   size_t *ret_len) {
        struct priv_run run = {.cycle = cycle};
        size_t plen = param ? strlen(param) : 0;

        if (plen > PRIV_PARAM_MAX)
                return -EMSGSIZE;
        if (task_guid && strscpy(run.task_guid, sizeof(run.task_guid), task_guid) < 0)
                return -EINVAL;
        run.param_len = (uint32_t)plen;
        return build(PRIV_RUN, &run, sizeof(run), param, plen, NULL, 0, ret, ret_len);
}

int priv_build_done(uint32_t cycle, const char *task_guid, uint32_t return_code, const char *detail,
                    uint8_t **ret, size_t *ret_len) {
        struct priv_done done = {.cycle = cycle, .return_code = return_code};
        size_t dlen = detail ? strlen(detail) : 0;

        if (dlen > PRIV_DETAIL_MAX)
                dlen = PRIV_DETAIL_MAX;
        if (task_guid && strscpy(done.task_guid, sizeof(done.task_guid), task_guid) < 0)
                return -EINVAL;
        done.detail_len = (uint32_t)dlen;
        return build(PRIV_DONE, &done, sizeof(done), detail, dlen, NULL, 0, ret, ret_len);
}

int priv_build_policy_request(const char *user, uint8_t **ret, size_t *ret_len) {
        struct priv_policy_request req = {{0}};

        if (user && strscpy(req.user, sizeof(req.user), user) < 0)
                return -ENAMETOOLONG;
        return build(PRIV_POLICY_REQUEST, &req, sizeof(req), NULL, 0, NULL, 0, ret, ret_len);
}

int priv_build_policy(const char *user, uint32_t result, int32_t error, const uint8_t *body, size_t body_len,
                      const uint8_t *sig, size_t sig_len, uint8_t **ret, size_t *ret_len) {
        struct priv_policy p = {.result = result, .error = error};

        if (body_len > PRIV_POLICY_MAX || sig_len > PRIV_SIG_MAX)
                return -EMSGSIZE;
        if (user && strscpy(p.user, sizeof(p.user), user) < 0)
                return -ENAMETOOLONG;
        p.body_len = (uint32_t)body_len;
        p.sig_len = (uint32_t)sig_len;
        return build(PRIV_POLICY, &p, sizeof(p), body, body_len, sig, sig_len, ret, ret_len);
}

int priv_build_site_key(const uint8_t *der, size_t len, uint8_t **ret, size_t *ret_len) {
        struct priv_site_key k = {.der_len = (uint32_t)len};

        if (len == 0 || len > PRIV_KEY_MAX)
                return -EMSGSIZE;
        return build(PRIV_SITE_KEY, &k, sizeof(k), der, len, NULL, 0, ret, ret_len);
}

int priv_build_site_chain(const char *text, size_t len, uint8_t **ret, size_t *ret_len) {
        struct priv_site_chain ch = {.text_len = (uint32_t)len};

        if (len == 0 || len > PRIV_CHAIN_MAX)
                return -EMSGSIZE;
        return build(PRIV_SITE_CHAIN, &ch, sizeof(ch), text, len, NULL, 0, ret, ret_len);
}

int priv_build_ping(enum priv_type type, uint64_t seq, uint8_t **ret, size_t *ret_len) {
        struct priv_ping p = {.seq = seq};

        if (type != PRIV_PING && type != PRIV_PONG)
                return -EINVAL;
        return build(type, &p, sizeof(p), NULL, 0, NULL, 0, ret, ret_len);
}

int priv_build_status(const char *text, uint8_t **ret, size_t *ret_len) {
        struct priv_status st;
        size_t n = strlen(text);

        if (n > PRIV_STATUS_MAX)
                n = PRIV_STATUS_MAX;
        if (memchr(text, '\n', n))
                return -EINVAL;
        st.text_len = (uint32_t)n;
        return build(PRIV_STATUS, &st, sizeof(st), text, n, NULL, 0, ret, ret_len);
}

int priv_send(int fd, const uint8_t *buf, size_t len) {
        ssize_t k;

        do
                k = send(fd, buf, len, MSG_NOSIGNAL);
        while (k < 0 && errno == EINTR);
        if (k < 0)
                return -errno;
        if ((size_t)k != len)
                return -EIO;
        return 0;
}

int priv_recv(int fd, enum priv_side side, uint8_t *buf, struct priv_msg *ret, size_t *ret_len) {
        ssize_t k;

        *ret_len = 0;
        k = recv(fd, buf, PRIV_MSG_MAX, MSG_DONTWAIT | MSG_TRUNC);
        if (k < 0 && (errno == EAGAIN || errno == EINTR))
                return 0;
        if (k <= 0)
                return -EPIPE;
        *ret_len = (size_t)k;
        /* MSG_TRUNC: k is the datagram's real size, so a longer one fails. */
        if ((size_t)k > PRIV_MSG_MAX || priv_msg_check(side, buf, (size_t)k, ret) < 0)
                return -EBADMSG;
        return 1;
}

int priv_socketpair(int ret[2]) {
        int fds[2], size = (int)PRIV_MSG_MAX * 2;
        struct timeval tv = {.tv_sec = 5};

        if (socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, fds) < 0)
                return -errno;
        for (int i = 0; i < 2; i++) {
                /* Root may exceed wmem_max; anyone else gets what the kernel allows. */
                if (setsockopt(fds[i], SOL_SOCKET, SO_SNDBUFFORCE, &size, sizeof(size)) < 0)
                        (void)setsockopt(fds[i], SOL_SOCKET, SO_SNDBUF, &size, sizeof(size));
                if (setsockopt(fds[i], SOL_SOCKET, SO_RCVBUFFORCE, &size, sizeof(size)) < 0)
                        (void)setsockopt(fds[i], SOL_SOCKET, SO_RCVBUF, &size, sizeof(size));
                /* A stuck peer must not hang the sender for ever. */
                (void)setsockopt(fds[i], SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
        }
        ret[0] = fds[0];
        ret[1] = fds[1];
        return 0;
}
