/* SPDX-License-Identifier: Apache-2.0 */
/*
 * tether-bench-mqtt: the MQTT peer of the benchmarks, with libmosquitto.
 *
 *   tether-bench-mqtt respond HOST PORT
 *       the device side: subscribes to tether/bench/push (QoS 1) and answers
 *       every message on tether/bench/answer (QoS 1) with the same payload.
 *   tether-bench-mqtt trigger HOST PORT N OUT
 *       the server side: publishes N messages one after another and times
 *       each until its answer arrives; writes microseconds, one a line, to
 *       OUT (after 20 warm-up messages) and prints median, p99 and max.
 *
 * The same job as Tether's "push a task, get the answer", without a cycle,
 * a signature or a durable spool: a lower bound for the transport.
 */

#include <errno.h>
#include <mosquitto.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "common/strutil.h"

#define TOPIC_PUSH "tether/bench/push"
#define TOPIC_ANSWER "tether/bench/answer"
#define WARMUP 20u

struct trigger_state {
        char expect[32];
        bool answered;
};

static uint64_t now_ns(void) {
        struct timespec ts;
        clock_gettime(CLOCK_MONOTONIC, &ts);
        return (uint64_t)ts.tv_sec * 1000000000ULL + (uint64_t)ts.tv_nsec;
}

static void on_push(struct mosquitto *m, void *userdata, const struct mosquitto_message *msg) {
        (void)userdata;
        if (strcmp(msg->topic, TOPIC_PUSH) == 0)
                (void)mosquitto_publish(m, NULL, TOPIC_ANSWER, msg->payloadlen, msg->payload, 1, false);
}

static void on_answer(struct mosquitto *m, void *userdata, const struct mosquitto_message *msg) {
        (void)m;
        struct trigger_state *st = userdata;
        size_t len = strlen(st->expect);
        if (strcmp(msg->topic, TOPIC_ANSWER) == 0 && (size_t)msg->payloadlen == len &&
            memcmp(msg->payload, st->expect, len) == 0)
                st->answered = true;
}

static int cmp_u64(const void *a, const void *b) {
        uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
        return x < y ? -1 : x > y;
}

static struct mosquitto *connect_to(const char *host, int port, const char *id, void *userdata) {
        struct mosquitto *m = mosquitto_new(id, true, userdata);
        if (!m)
                return NULL;
        /* Small request/answer messages: Nagle would add delayed-ACK waits. */
        (void)mosquitto_int_option(m, MOSQ_OPT_TCP_NODELAY, 1);
        if (mosquitto_connect(m, host, port, 60) != MOSQ_ERR_SUCCESS) {
                fprintf(stderr, "mqtt: cannot connect to %s:%d\n", host, port);
                mosquitto_destroy(m);
                return NULL;
        }
        return m;
}

static int respond(const char *host, int port) {
        struct mosquitto *m = connect_to(host, port, "tether-bench-responder", NULL);
        if (!m)
                return 1;
        mosquitto_message_callback_set(m, on_push);
        if (mosquitto_subscribe(m, NULL, TOPIC_PUSH, 1) != MOSQ_ERR_SUCCESS)
                return 1;
        int r = mosquitto_loop_forever(m, -1, 1);
        fprintf(stderr, "mqtt responder: loop ended: %s\n", mosquitto_strerror(r));
        mosquitto_destroy(m);
        return r == MOSQ_ERR_SUCCESS ? 0 : 1;
}

static int trigger(const char *host, int port, uint64_t n, const char *out_path) {
        struct trigger_state st = {0};
        struct mosquitto *m = connect_to(host, port, "tether-bench-trigger", &st);
        if (!m)
                return 1;
        mosquitto_message_callback_set(m, on_answer);
        if (mosquitto_subscribe(m, NULL, TOPIC_ANSWER, 1) != MOSQ_ERR_SUCCESS)
                return 1;
        /* Let the SUBACK arrive before the first push. */
        for (int i = 0; i < 10; i++)
                (void)mosquitto_loop(m, 50, 1);

        uint64_t total = n + WARMUP;
        uint64_t *lat = calloc(total, sizeof(*lat));
        if (!lat)
                return 1;
        for (uint64_t i = 0; i < total; i++) {
                snprintf(st.expect, sizeof(st.expect), "%llu", (unsigned long long)i);
                st.answered = false;
                uint64_t t0 = now_ns();
                if (mosquitto_publish(m, NULL, TOPIC_PUSH, (int)strlen(st.expect), st.expect, 1, false) !=
                    MOSQ_ERR_SUCCESS)
                        return 1;
                while (!st.answered) {
                        int r = mosquitto_loop(m, 1000, 1);
                        if (r != MOSQ_ERR_SUCCESS) {
                                fprintf(stderr, "mqtt trigger: %s\n", mosquitto_strerror(r));
                                return 1;
                        }
                        if (now_ns() - t0 > 30ULL * 1000000000ULL) {
                                fprintf(stderr, "mqtt trigger: no answer to message %llu in 30 s\n",
                                        (unsigned long long)i);
                                return 1;
                        }
                }
                lat[i] = now_ns() - t0;
        }
        FILE *out = fopen(out_path, "we");
        if (!out)
                return 1;
        for (uint64_t i = WARMUP; i < total; i++)
                fprintf(out, "%.1f\n", (double)lat[i] / 1e3);
        fclose(out);
        qsort(lat + WARMUP, n, sizeof(*lat), cmp_u64);
        uint64_t *v = lat + WARMUP;
        size_t p99 = (size_t)((double)(n - 1) * 0.99 + 0.5);
        printf("mqtt publish -> answer (QoS 1, mosquitto, loopback) n=%llu median=%.3f ms p99=%.3f ms "
               "max=%.3f ms\n",
               (unsigned long long)n, (double)v[(n - 1) / 2] / 1e6, (double)v[p99] / 1e6,
               (double)v[n - 1] / 1e6);
        free(lat);
        mosquitto_disconnect(m);
        mosquitto_destroy(m);
        return 0;
}

int main(int argc, char **argv) {
        uint64_t port = 0, n = 0;
        if (argc < 4 || parse_u64(argv[3], 1, 65535, &port) < 0) {
                fprintf(stderr, "usage: tether-bench-mqtt respond HOST PORT | trigger HOST PORT N OUT\n");
                return 2;
        }
        mosquitto_lib_init();
        int r;
        if (strcmp(argv[1], "respond") == 0)
                r = respond(argv[2], (int)port);
        else if (strcmp(argv[1], "trigger") == 0 && argc == 6 && parse_u64(argv[4], 1, 10000000, &n) == 0)
                r = trigger(argv[2], (int)port, n, argv[5]);
        else {
                fprintf(stderr, "usage: tether-bench-mqtt respond HOST PORT | trigger HOST PORT N OUT\n");
                r = 2;
        }
        mosquitto_lib_cleanup();
        return r;
}
