/* SPDX-License-Identifier: Apache-2.0 */
#include "agent/control.h"

#include <errno.h>
#include <pwd.h>
#include <fcntl.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/fsuid.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <json-c/json.h>
#include <systemd/sd-login.h>

#include "common/cleanup.h"
#include "common/log.h"
#include "common/strutil.h"

#define LINE_MAX_BYTES 1024
#define CLIENT_TIMEOUT_USEC (5ULL * 1000000ULL)

struct control_server {
        sd_event *event;
        int fd;
        sd_event_source *source;
        control_handler_fn handler;
        void *userdata;
};

struct control_client {
        struct control_server *server;
        int fd;
        sd_event_source *io;
        sd_event_source *timer;
        char buf[LINE_MAX_BYTES];
        size_t len;
        uid_t peer_uid;
};

static void client_free(struct control_client *c) {
        sd_event_source_disable_unref(c->io);
        sd_event_source_disable_unref(c->timer);
        if (c->fd >= 0)
                close(c->fd);
        free(c);
}

static void client_answer(struct control_client *c, struct json_object *answer) {
        const char *text;
        size_t n, off = 0;

        if (!answer) {
                answer = json_object_new_object();
                if (!answer)
                        return;
                json_object_object_add(answer, "ok", json_object_new_boolean(0));
                json_object_object_add(answer, "error", json_object_new_string("out of memory"));
        }
        text = json_object_to_json_string_ext(answer, JSON_C_TO_STRING_PLAIN);
        n = strlen(text);
        /* Answers are small; the socket buffer takes them at once. A client
         * that does not read gets cut off rather than blocking the loop. */
        while (off < n) {
                ssize_t k = send(c->fd, text + off, n - off, MSG_NOSIGNAL | MSG_DONTWAIT);
                if (k <= 0)
                        break;
                off += (size_t)k;
        }
        (void)send(c->fd, "\n", 1, MSG_NOSIGNAL | MSG_DONTWAIT);
        json_object_put(answer);
}

static int client_io(sd_event_source *s, int fd, uint32_t revents, void *userdata) {
        struct control_client *c = userdata;
        char *nl, *arg;
        ssize_t k;

        k = recv(c->fd, c->buf + c->len, sizeof(c->buf) - 1 - c->len, MSG_DONTWAIT);
        if (k < 0 && (errno == EAGAIN || errno == EINTR))
                return 0;
        if (k <= 0) {
                client_free(c);
                return 0;
        }
        c->len += (size_t)k;
        c->buf[c->len] = 0;
        nl = strchr(c->buf, '\n');
        if (!nl) {
                if (c->len >= sizeof(c->buf) - 1) {
                        struct json_object *o = json_object_new_object();
                        if (o) {
                                json_object_object_add(o, "ok", json_object_new_boolean(0));
                                json_object_object_add(o, "error",
                                                       json_object_new_string("request too long"));
                        }
                        client_answer(c, o);
                        client_free(c);
                }
                return 0;
        }
        *nl = 0;
        arg = strchr(c->buf, ' ');
        if (arg)
                *arg++ = 0;
        client_answer(c, c->server->handler(c->server->userdata, c->buf, arg ? arg : "", c->peer_uid));
        client_free(c);
        return 0;
}

static int client_timeout(sd_event_source *s, uint64_t usec, void *userdata) {
        client_free(userdata);
        return 0;
}

static int server_accept(sd_event_source *s, int fd, uint32_t revents, void *userdata) {
        struct control_server *srv = userdata;
        struct control_client *c;
        uint64_t now;
        int cfd, r;

        cfd = accept4(srv->fd, NULL, NULL, SOCK_CLOEXEC | SOCK_NONBLOCK);
        if (cfd < 0)
                return 0;
        c = calloc(1, sizeof(*c));
        if (!c) {
                close(cfd);
                return 0;
        }
        c->server = srv;
        c->fd = cfd;
        struct ucred cred;
        socklen_t cl = sizeof(cred);
        c->peer_uid = getsockopt(cfd, SOL_SOCKET, SO_PEERCRED, &cred, &cl) == 0 ? cred.uid : (uid_t)-1;
        r = sd_event_add_io(srv->event, &c->io, cfd, EPOLLIN, client_io, c);
        if (r >= 0 && (r = sd_event_now(srv->event, CLOCK_MONOTONIC, &now)) >= 0)
                r = sd_event_add_time(srv->event, &c->timer, CLOCK_MONOTONIC, now + CLIENT_TIMEOUT_USEC, 0,
                                      client_timeout, c);
        if (r < 0) {
                log_warning_errno(r, "Cannot serve a control connection, ignoring: %m");
                client_free(c);
        }
        return 0;
}

int control_server_new(sd_event *event, int listen_fd, control_handler_fn handler, void *userdata,
                       struct control_server **ret) {
        struct control_server *c = calloc(1, sizeof(*c));
        int r;

        if (!c) {
                close(listen_fd);
                return -ENOMEM;
        }
        c->event = event;
        c->fd = listen_fd;
        c->handler = handler;
        c->userdata = userdata;
        r = sd_event_add_io(event, &c->source, listen_fd, EPOLLIN, server_accept, c);
        if (r < 0) {
                control_server_free(c);
                return r;
        }
        *ret = c;
        return 0;
}

struct control_server *control_server_free(struct control_server *c) {
        if (!c)
                return NULL;
        sd_event_source_disable_unref(c->source);
        if (c->fd >= 0)
                close(c->fd);
        free(c);
        return NULL;
}

int control_socket_bind(const char *path, gid_t gid) {
        struct sockaddr_un sa = {.sun_family = AF_UNIX};
        _cleanup_(closep) int fd = -1;
        gid_t old_fsgid = (gid_t)-1;
        mode_t old;
        int r, e;

        if (strscpy(sa.sun_path, sizeof(sa.sun_path), path) < 0)
                return -ENAMETOOLONG;
        fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
        if (fd < 0)
                return -errno;
        /* unlink() never follows the last component: at worst it removes
         * what another user put in their own directory. */
        (void)unlink(path);
        /* bind() creates the inode with the umask's mode and the file
         * system ids: 0660 and the group asked for, from the first moment. */
        if (gid != (gid_t)-1) {
                old_fsgid = (gid_t)setfsgid(gid);
                if ((gid_t)setfsgid(gid) != gid) {
                        (void)setfsgid(old_fsgid);
                        return -EPERM;
                }
        }
        old = umask(0117);
        r = bind(fd, (struct sockaddr *)&sa, sizeof(sa));
        e = errno;
        umask(old);
        if (gid != (gid_t)-1)
                (void)setfsgid(old_fsgid);
        if (r < 0)
                return -e;
        if (listen(fd, 16) < 0)
                return -errno;
        return TAKE_FD(fd);
}

int control_request(const char *path, const char *line, char **ret) {
        struct sockaddr_un sa = {.sun_family = AF_UNIX};
        _cleanup_(closep) int fd = -1;
        _cleanup_(freep) char *buf = NULL;
        size_t len = 0, cap = 0, n = strlen(line);

        if (strscpy(sa.sun_path, sizeof(sa.sun_path), path) < 0)
                return -ENAMETOOLONG;
        fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
        if (fd < 0)
                return -errno;
        if (connect(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0)
                return -errno;
        if (send(fd, line, n, MSG_NOSIGNAL) != (ssize_t)n || send(fd, "\n", 1, MSG_NOSIGNAL) != 1)
                return -EIO;
        for (;;) {
                struct pollfd p = {.fd = fd, .events = POLLIN};
                ssize_t k;
                int r = poll(&p, 1, 10000);
                if (r < 0 && errno == EINTR)
                        continue;
                if (r <= 0)
                        return r < 0 ? -errno : -ETIMEDOUT;
                if (len + 4096 + 1 > cap) {
                        char *nb = realloc(buf, cap + 8192);
                        if (!nb)
                                return -ENOMEM;
                        buf = nb;
                        cap += 8192;
                }
                k = recv(fd, buf + len, cap - len - 1, 0);
                if (k < 0 && errno == EINTR)
                        continue;
                if (k < 0)
                        return -errno;
                if (k == 0)
                        break;
                len += (size_t)k;
                if (len > 16u * 1024u * 1024u)
                        return -EFBIG;
        }
        if (!buf)
                return -ECONNRESET;
        buf[len] = 0;
        *ret = TAKE_PTR(buf);
        return 0;
}

struct json_object *control_active_users(void) {
        _cleanup_(freep) uid_t *uids = NULL;
        struct json_object *arr = json_object_new_array();
        int n;

        if (!arr)
                return NULL;
        n = sd_get_uids(&uids);
        for (int i = 0; i < n; i++) {
                _cleanup_(freep) char *state = NULL;
                struct passwd pw, *found = NULL;
                char buf[1024], num[24];
                if (sd_uid_get_state(uids[i], &state) < 0 ||
                    (strcmp(state, "active") != 0 && strcmp(state, "online") != 0))
                        continue;
                snprintf(num, sizeof(num), "%u", (unsigned)uids[i]);
                /* The same test as the scheduler's user-policy cycle. */
                if (getpwuid_r(uids[i], &pw, buf, sizeof(buf), &found) != 0 || !found)
                        json_object_array_add(arr, json_object_new_string(num));
                else
                        json_object_array_add(arr, json_object_new_string(found->pw_name));
        }
        return arr;
}
