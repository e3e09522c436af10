/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Writes the seed corpora of tests/fuzz/corpus/ from the vectors and from
 * messages built by the codec (run once by hand, like make-vectors):
 *
 *   make-seeds <tests/vectors> <tests/fuzz/corpus>
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "transport/frame.h"
#include "transport/message.h"
#include "transport/sign.h"

static const char *const msg_dirs[] = {
        [TETHER_FRAME_SIGNIN] = "msg-signin",       [TETHER_FRAME_SIGNIN_CONFIRM] = "msg-signin-confirm",
        [TETHER_FRAME_PUSH] = "msg-push",           [TETHER_FRAME_PUSH_ACK] = "msg-push-ack",
        [TETHER_FRAME_RESPONSE] = "msg-response",   [TETHER_FRAME_RESPONSE_ACK] = "msg-response-ack",
        [TETHER_FRAME_KEEPALIVE] = "msg-keepalive", [TETHER_FRAME_GOODBYE] = "msg-goodbye",
};

static void die(const char *what, int r) __attribute__((noreturn));
static void die(const char *what, int r) {
        fprintf(stderr, "make-seeds: %s: %s\n", what, strerror(r < 0 ? -r : r));
        exit(1);
}

static void put(const char *corpus, const char *dir, const char *name, const uint8_t *prefix,
                size_t prefix_len, const void *data, size_t len) {
        char path[4096];
        FILE *f;

        snprintf(path, sizeof(path), "%s/%s", corpus, dir);
        if (mkdir(path, 0755) < 0 && errno != EEXIST)
                die(path, errno);
        snprintf(path, sizeof(path), "%s/%s/%s", corpus, dir, name);
        f = fopen(path, "we");
        if (!f)
                die(path, errno);
        if ((prefix_len && fwrite(prefix, 1, prefix_len, f) != prefix_len) ||
            (len && fwrite(data, 1, len, f) != len) || fclose(f) != 0)
                die(path, EIO);
}

static uint8_t *slurp(const char *dir, const char *name, size_t *len) {
        char path[4096];
        uint8_t *buf;
        FILE *f;
        long n;

        snprintf(path, sizeof(path), "%s/%s", dir, name);
        f = fopen(path, "re");
        if (!f)
                die(path, errno);
        if (fseek(f, 0, SEEK_END) < 0)
                die(path, EIO);
        n = ftell(f);
        if (n < 0 || fseek(f, 0, SEEK_SET) < 0)
                die(path, EIO);
        buf = malloc((size_t)n + 1);
        if (!buf || fread(buf, 1, (size_t)n, f) != (size_t)n)
                die(path, EIO);
        fclose(f);
        *len = (size_t)n;
        return buf;
}

static struct tether_msg *sample(uint8_t type, bool minimal) {
        struct tether_msg *m = NULL;
        time_t t = 1579621423;

        if (tether_msg_new(type, &m) < 0)
                die("tether_msg_new", ENOMEM);
        switch (type) {
        case TETHER_FRAME_SIGNIN:
                m->signin.timestamp = t;
                memcpy(m->signin.client_id, "5E0C2B7A-91D4-4F0E-8C3B-6A2D1F9E7B40", TETHER_GUID_LEN);
                m->signin.version = strdup("0.1.0");
                m->signin.hostname = strdup("host-1");
                m->signin.public_key = strdup("MFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAE");
                m->signin.n_task_types = minimal ? 0 : 3;
                for (unsigned i = 0; i < 3; i++)
                        m->signin.task_types[i] = i + 1;
                m->signin.enrolment_token = minimal ? NULL : strdup("token");
                break;
        case TETHER_FRAME_SIGNIN_CONFIRM:
                m->signin_confirm.timestamp = t;
                m->signin_confirm.message_version = 1;
                m->signin_confirm.status = minimal ? TETHER_SIGNIN_PENDING : TETHER_SIGNIN_APPROVED;
                m->signin_confirm.keepalive_seconds = 180;
                m->signin_confirm.site_public_key = minimal ? NULL : strdup("MCowBQYDK2VwAyEA");
                break;
        case TETHER_FRAME_PUSH:
                m->push.timestamp = t;
                m->push.push_id = 7;
                m->push.task_id = 8;
                memcpy(m->push.task_guid, "A43DD1B3-A006-4604-B012-5529380B3B6F", TETHER_GUID_LEN);
                m->push.task_type = minimal ? 1 : 2;
                m->push.task_param = strdup(minimal ? "" : "alice & <bob>");
                m->push.expires = t + 3600;
                if (!minimal)
                        memcpy(m->push.client_id, "5E0C2B7A-91D4-4F0E-8C3B-6A2D1F9E7B40", TETHER_GUID_LEN);
                break;
        case TETHER_FRAME_PUSH_ACK:
        case TETHER_FRAME_RESPONSE_ACK:
                memcpy(m->ack.task_guid, "A43DD1B3-A006-4604-B012-5529380B3B6F", TETHER_GUID_LEN);
                break;
        case TETHER_FRAME_RESPONSE:
                m->response.timestamp = t;
                m->response.push_id = 7;
                m->response.task_id = 8;
                m->response.return_code = minimal ? 1 : 2;
                memcpy(m->response.task_guid, "A43DD1B3-A006-4604-B012-5529380B3B6F", TETHER_GUID_LEN);
                memcpy(m->response.client_id, "5E0C2B7A-91D4-4F0E-8C3B-6A2D1F9E7B40", TETHER_GUID_LEN);
                m->response.detail = strdup(minimal ? "" : "step 'install' failed: exit 1");
                break;
        case TETHER_FRAME_KEEPALIVE:
                m->keepalive.timestamp = t;
                break;
        case TETHER_FRAME_GOODBYE:
                m->goodbye.reason = minimal ? TETHER_GOODBYE_SHUTDOWN : TETHER_GOODBYE_OVERLOADED;
                m->goodbye.retry_after_seconds = minimal ? 0 : 600;
                break;
        }
        return m;
}

int main(int argc, char **argv) {
        static const uint8_t split_seed = 7, stream_mode = 0;
        struct tether_key *key = NULL;
        uint8_t *stream = NULL, *vec;
        size_t stream_len = 0, vec_len;
        int r;

        if (argc != 3) {
                fprintf(stderr, "usage: %s <vectors dir> <corpus dir>\n", argv[0]);
                return 2;
        }
        r = tether_key_generate(TETHER_KEY_EC_P256, &key);
        if (r < 0)
                die("key", r);

        vec = slurp(argv[1], "response.frame", &vec_len);
        put(argv[2], "frame", "vector-response", &split_seed, 1, vec, vec_len);
        put(argv[2], "open", "vector-response", &stream_mode, 1, vec, vec_len);
        free(vec);
        vec = slurp(argv[1], "response.xml", &vec_len);
        put(argv[2], "msg-response", "vector-response", NULL, 0, vec, vec_len);
        free(vec);

        for (uint8_t type = 1; type <= 8; type++)
                for (int minimal = 0; minimal <= 1; minimal++) {
                        struct tether_msg *m = sample(type, minimal);
                        uint8_t open_prefix[2] = {1, (uint8_t)(type - 1)};
                        const char *name = minimal ? "minimal" : "full";
                        char *body = NULL;
                        uint8_t *frame = NULL, *grown;
                        size_t body_len = 0, frame_len = 0;

                        r = tether_msg_build(m, &body, &body_len);
                        if (r < 0)
                                die("build", r);
                        r = tether_msg_seal(m, key, TETHER_FRAME_DEFAULT_MAX_BODY, &frame, &frame_len);
                        if (r < 0)
                                die("seal", r);
                        put(argv[2], msg_dirs[type], name, NULL, 0, body, body_len);
                        char oname[64];

                        snprintf(oname, sizeof(oname), "signed-%s-%s", msg_dirs[type] + 4, name);
                        put(argv[2], "open", oname, open_prefix, 2, body, body_len);
                        if (!minimal) {
                                char fname[64];

                                snprintf(fname, sizeof(fname), "type-%u", type);
                                put(argv[2], "frame", fname, &split_seed, 1, frame, frame_len);
                                grown = realloc(stream, stream_len + frame_len);
                                if (!grown)
                                        die("stream", ENOMEM);
                                stream = grown;
                                memcpy(stream + stream_len, frame, frame_len);
                                stream_len += frame_len;
                        }
                        free(frame);
                        free(body);
                        tether_msg_free(m);
                }
        put(argv[2], "frame", "stream-all-types", &split_seed, 1, stream, stream_len);
        free(stream);
        tether_key_free(key);
        printf("wrote seeds to %s\n", argv[2]);
        return 0;
}
