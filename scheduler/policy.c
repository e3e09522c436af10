/* SPDX-License-Identifier: Apache-2.0 */
#include "scheduler/policy.h"

#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <libxml/tree.h>

#include "common/cleanup.h"
#include "common/fsutil.h"
#include "common/strutil.h"
#include "scheduler/internal.h"
#include "transport/diag.h"
#include "transport/guid.h"
#include "transport/sign.h"
#include "transport/xml.h"

DEFINE_TRIVIAL_CLEANUP_FUNC(xmlDoc *, xmlFreeDoc);

#define INTERVAL_MIN_SEC 60u
#define INTERVAL_MAX_SEC 2592000u
#define TIMEOUT_MAX_SEC 86400u

static void policy_app_clear(struct policy_app *a) {
        free(a->id);
        free(a->version);
        free(a->detect);
        free(a->install);
        free(a->uninstall);
}

struct policy *policy_free(struct policy *p) {
        if (!p)
                return NULL;
        for (size_t i = 0; i < p->n_apps; i++)
                policy_app_clear(&p->apps[i]);
        free(p->apps);
        free(p->policy_id);
        free(p->timestamp);
        free(p->user);
        free(p);
        return NULL;
}

static int fail(char *reason, size_t size, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static int fail(char *reason, size_t size, const char *fmt, ...) {
        va_list ap;

        if (reason && size > 0) {
                va_start(ap, fmt);
                vsnprintf(reason, size, fmt, ap);
                va_end(ap);
        }
        return -EBADMSG;
}

/* An attribute's value, owned by the caller; NULL when absent. */
static int get_attr(xmlNode *node, const char *name, char **ret) {
        xmlChar *v = xmlGetNoNsProp(node, BAD_CAST name);

        if (!v) {
                *ret = NULL;
                return 0;
        }
        *ret = strdup((const char *)v);
        xmlFree(v);
        return *ret ? 0 : -ENOMEM;
}

/* The text of the single child element name: 1 and *ret set, 0 when absent. */
static int get_child_text(xmlNode *parent, const char *name, char **ret, char *reason, size_t size) {
        struct tether_diag diag = {0};
        xmlNode *child = NULL;
        int r;

        r = tether_xml_child(parent, name, &child, &diag);
        if (r < 0)
                return fail(reason, size, "%s", diag.text[0] ? diag.text : "bad element");
        if (r == 0) {
                *ret = NULL;
                return 0;
        }
        r = tether_xml_text(child, ret);
        if (r < 0)
                return r;
        return 1;
}

static bool app_id_valid(const char *id) {
        size_t n = strlen(id);

        if (n < 1 || n > 128)
                return false;
        for (size_t i = 0; i < n; i++) {
                char c = id[i];
                if (!((c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
                      c == '.' || c == '_' || c == '+' || c == '-'))
                        return false;
        }
        return true;
}

bool policy_user_name_valid(const char *name) {
        size_t n;

        if (!name)
                return false;
        n = strlen(name);
        if (n < 1 || n > 32)
                return false;
        for (size_t i = 0; i < n; i++) {
                char c = name[i];
                bool alnum = (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9');
                if (i == 0 && !(alnum || c == '_'))
                        return false;
                if (!(alnum || c == '_' || c == '.' || c == '-'))
                        return false;
        }
        return true;
}

static int parse_intervals(xmlNode *root, struct policy *p, char *reason, size_t size) {
        struct tether_diag diag = {0};
        xmlNode *intervals = NULL;
        int r;

        r = tether_xml_child(root, "Intervals", &intervals, &diag);
        if (r < 0)
                return fail(reason, size, "%s", diag.text);
        if (r == 0)
                return 0;
        for (uint32_t t = 1; t <= TETHER_TASK_TYPE_MAX; t++) {
                const char *name = tether_task_type_info(t)->interval_element;
                _cleanup_(freep) char *text = NULL;
                uint64_t v;

                if (!name)
                        continue;
                r = get_child_text(intervals, name, &text, reason, size);
                if (r < 0)
                        return r;
                if (r == 0)
                        continue;
                if (parse_u64(text, INTERVAL_MIN_SEC, INTERVAL_MAX_SEC, &v) < 0)
                        return fail(reason, size, "Intervals/%s must be %u..%u seconds", name,
                                    INTERVAL_MIN_SEC, INTERVAL_MAX_SEC);
                p->interval_sec[t] = v;
        }
        return 0;
}

static int parse_settings(xmlNode *root, char *reason, size_t size) {
        struct tether_diag diag = {0};
        xmlNode *settings = NULL;
        int r;

        /* Settings are for the hooks, which read the file; we only check
         * that each one is named. */
        r = tether_xml_child(root, "Settings", &settings, &diag);
        if (r < 0)
                return fail(reason, size, "%s", diag.text);
        if (r == 0)
                return 0;
        for (xmlNode *c = settings->children; c; c = c->next) {
                _cleanup_(freep) char *name = NULL;

                if (c->type != XML_ELEMENT_NODE || c->ns || !xmlStrEqual(c->name, BAD_CAST "Setting"))
                        continue;
                r = get_attr(c, "Name", &name);
                if (r < 0)
                        return r;
                if (!name || !name[0])
                        return fail(reason, size, "Setting without a Name");
        }
        return 0;
}

static int parse_application(xmlNode *node, struct policy_app *a, char *reason, size_t size) {
        _cleanup_(freep) char *intent = NULL, *timeout = NULL;
        int r;

        r = get_attr(node, "ID", &a->id);
        if (r < 0)
                return r;
        if (!a->id || !app_id_valid(a->id))
                return fail(reason, size, "Application ID missing or not [A-Za-z0-9._+-]{1,128}");
        r = get_attr(node, "Version", &a->version);
        if (r < 0)
                return r;

        r = get_child_text(node, "Intent", &intent, reason, size);
        if (r < 0)
                return r;
        if (r == 0)
                return fail(reason, size, "Application '%s': missing Intent", a->id);
        if (streq(intent, "Required"))
                a->intent = POLICY_INTENT_REQUIRED;
        else if (streq(intent, "Uninstall"))
                a->intent = POLICY_INTENT_UNINSTALL;
        else
                return fail(reason, size, "Application '%s': Intent must be Required or Uninstall", a->id);

        r = get_child_text(node, "Detect", &a->detect, reason, size);
        if (r < 0)
                return r;
        if (r == 0 || !a->detect[0])
                return fail(reason, size, "Application '%s': missing Detect", a->id);
        r = get_child_text(node, "Install", &a->install, reason, size);
        if (r < 0)
                return r;
        r = get_child_text(node, "Uninstall", &a->uninstall, reason, size);
        if (r < 0)
                return r;
        if (a->intent == POLICY_INTENT_REQUIRED && (!a->install || !a->install[0]))
                return fail(reason, size, "Application '%s': Required needs Install", a->id);
        if (a->intent == POLICY_INTENT_UNINSTALL && (!a->uninstall || !a->uninstall[0]))
                return fail(reason, size, "Application '%s': Uninstall needs Uninstall", a->id);

        a->timeout_sec = POLICY_TIMEOUT_DEFAULT_SEC;
        r = get_child_text(node, "TimeoutSeconds", &timeout, reason, size);
        if (r < 0)
                return r;
        if (r > 0 && parse_u64(timeout, 1, TIMEOUT_MAX_SEC, &a->timeout_sec) < 0)
                return fail(reason, size, "Application '%s': TimeoutSeconds must be 1..%u", a->id,
                            TIMEOUT_MAX_SEC);
        return 0;
}

static int parse_applications(xmlNode *root, struct policy *p, char *reason, size_t size) {
        struct tether_diag diag = {0};
        xmlNode *apps = NULL;
        size_t n = 0;
        int r;

        r = tether_xml_child(root, "Applications", &apps, &diag);
        if (r < 0)
                return fail(reason, size, "%s", diag.text);
        if (r == 0)
                return 0;
        for (xmlNode *c = apps->children; c; c = c->next)
                if (c->type == XML_ELEMENT_NODE && !c->ns && xmlStrEqual(c->name, BAD_CAST "Application"))
                        n++;
        if (n > POLICY_MAX_APPLICATIONS)
                return fail(reason, size, "more than %u applications", POLICY_MAX_APPLICATIONS);
        if (n == 0)
                return 0;
        p->apps = calloc(n, sizeof(*p->apps));
        if (!p->apps)
                return -ENOMEM;
        for (xmlNode *c = apps->children; c; c = c->next) {
                if (c->type != XML_ELEMENT_NODE || c->ns || !xmlStrEqual(c->name, BAD_CAST "Application"))
                        continue;
                struct policy_app *a = &p->apps[p->n_apps++];
                r = parse_application(c, a, reason, size);
                if (r < 0)
                        return r;
                for (size_t j = 0; j + 1 < p->n_apps; j++)
                        if (streq(p->apps[j].id, a->id))
                                return fail(reason, size, "Application ID '%s' appears twice", a->id);
        }
        return 0;
}

int policy_parse(const uint8_t *body, size_t len, const char *user, struct policy **ret, char *reason,
                 size_t size) {
        _cleanup_(xmlFreeDocp) xmlDoc *doc = NULL;
        _cleanup_(policy_freep) struct policy *p = NULL;
        _cleanup_(freep) char *version = NULL, *scope = NULL;
        struct tether_diag diag = {0};
        xmlNode *root;
        time_t ts;
        int r;

        r = tether_xml_read(body, len, "Policy", &doc, &diag);
        if (r < 0)
                return fail(reason, size, "not a Policy document: %s", diag.text[0] ? diag.text : "bad XML");
        root = xmlDocGetRootElement(doc);
        if (!root)
                return fail(reason, size, "empty document");

        p = calloc(1, sizeof(*p));
        if (!p)
                return -ENOMEM;

        r = get_attr(root, "Version", &version);
        if (r < 0)
                return r;
        if (!version || !streq(version, "1"))
                return fail(reason, size, "Policy Version must be 1");
        r = get_attr(root, "Scope", &scope);
        if (r < 0)
                return r;
        if (!scope || !streq(scope, user ? "user" : "machine"))
                return fail(reason, size, "Policy Scope must be '%s'", user ? "user" : "machine");
        r = get_attr(root, "User", &p->user);
        if (r < 0)
                return r;
        if (user) {
                /* A policy signed for alice must not be usable as bob's. */
                if (!p->user || !streq(p->user, user))
                        return fail(reason, size, "Policy User is not '%s'", user);
        } else {
                p->user = mfree(p->user);
        }
        r = get_attr(root, "TimeStamp", &p->timestamp);
        if (r < 0)
                return r;
        if (!p->timestamp || tether_timestamp_parse(p->timestamp, &ts) < 0)
                return fail(reason, size, "Policy TimeStamp is not YYYY-MM-DDTHH:MM:SSZ");
        r = get_attr(root, "PolicyID", &p->policy_id);
        if (r < 0)
                return r;
        if (!p->policy_id || !tether_guid_valid(p->policy_id))
                return fail(reason, size, "Policy PolicyID is not a GUID");

        p->empty = true;
        for (xmlNode *c = root->children; c; c = c->next)
                if (c->type == XML_ELEMENT_NODE)
                        p->empty = false;
        r = parse_intervals(root, p, reason, size);
        if (r < 0)
                return r;
        r = parse_settings(root, reason, size);
        if (r < 0)
                return r;
        r = parse_applications(root, p, reason, size);
        if (r < 0)
                return r;

        *ret = TAKE_PTR(p);
        return 0;
}

int policy_verify_parse(const struct tether_key *key, const uint8_t *body, size_t len, const uint8_t *sig,
                        size_t sig_len, const char *user, struct policy **ret, char *reason,
                        size_t reason_size) {
        int r;

        if (!key)
                return fail(reason, reason_size, "no site key to verify the policy");
        if (!body || len == 0)
                return fail(reason, reason_size, "empty policy");
        if (len > POLICY_MAX_BYTES)
                return fail(reason, reason_size, "policy larger than %u bytes", POLICY_MAX_BYTES);
        if (!sig || sig_len == 0)
                return fail(reason, reason_size, "policy has no signature");
        /* Verify before a single byte is parsed. */
        r = tether_verify(key, TETHER_SIG_TYPE_POLICY, body, len, sig, sig_len);
        if (r == -EBADMSG)
                return fail(reason, reason_size, "signature does not verify against the site key");
        if (r < 0) {
                fail(reason, reason_size, "signature check failed: %s", strerror(-r));
                return r;
        }
        return policy_parse(body, len, user, ret, reason, reason_size);
}

int policy_path(const char *state_dir, const char *user, char **ret) {
        char *p;
        int n;

        if (user && !policy_user_name_valid(user))
                return -EINVAL;
        if (user)
                n = asprintf(&p, "%s/policies/user/%s.xml", state_dir, user);
        else
                n = asprintf(&p, "%s/policies/machine.xml", state_dir);
        if (n < 0)
                return -ENOMEM;
        *ret = p;
        return 0;
}

static int mkdir_if_missing(const char *path) {
        if (mkdir(path, 0755) < 0 && errno != EEXIST)
                return -errno;
        return 0;
}

int policy_store(const char *state_dir, const char *user, const uint8_t *body, size_t len,
                 const uint8_t *sig, size_t sig_len) {
        _cleanup_(freep) char *path = NULL, *sig_path = NULL, *dir = NULL;
        int r;

        if (asprintf(&dir, "%s/policies", state_dir) < 0)
                return -ENOMEM;
        r = mkdir_if_missing(dir);
        if (r < 0)
                return r;
        if (user) {
                free(dir);
                if (asprintf(&dir, "%s/policies/user", state_dir) < 0) {
                        dir = NULL;
                        return -ENOMEM;
                }
                r = mkdir_if_missing(dir);
                if (r < 0)
                        return r;
        }
        r = policy_path(state_dir, user, &path);
        if (r < 0)
                return r;
        if (asprintf(&sig_path, "%s.sig", path) < 0)
                return -ENOMEM;

        /* The signature first: a crash between the two leaves a new
         * signature over the old body, which fails verification at load and
         * makes the next cycle fetch again; never an unsigned new body.
         * Policies are not secret from local users (hooks running as a user
         * read theirs); they must not be writable by anyone but root. */
        r = write_file_atomic(sig_path, sig, sig_len, 0644, FSUTIL_DURABLE);
        if (r < 0)
                return r;
        return write_file_atomic(path, body, len, 0644, FSUTIL_DURABLE);
}

int policy_seal(const uint8_t *body, size_t len) {
        _cleanup_(closep) int fd = -1;
        size_t off = 0;

        /* A sealed memfd: exactly these bytes for as long as anyone holds
         * it, whatever happens to the stored file or to the hook that reads
         * it (no write, no truncate, no new seals). */
        fd = memfd_create("tether-policy", MFD_CLOEXEC | MFD_ALLOW_SEALING);
        if (fd < 0)
                return -errno;
        while (off < len) {
                ssize_t n = write(fd, body + off, len - off);
                if (n < 0 && errno == EINTR)
                        continue;
                if (n <= 0)
                        return n < 0 ? -errno : -EIO;
                off += (size_t)n;
        }
        if (fcntl(fd, F_ADD_SEALS, F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_WRITE | F_SEAL_SEAL) < 0)
                return -errno;
        if (lseek(fd, 0, SEEK_SET) < 0)
                return -errno;
        return TAKE_FD(fd);
}

int policy_load(const struct tether_key *key, const char *state_dir, const char *user, struct policy **ret,
                int *ret_fd, char *reason, size_t reason_size) {
        _cleanup_(freep) char *path = NULL, *sig_path = NULL;
        _cleanup_(freep) uint8_t *body = NULL, *sig = NULL;
        _cleanup_(policy_freep) struct policy *p = NULL;
        size_t len = 0, sig_len = 0;
        int r, fd = -1;

        r = policy_path(state_dir, user, &path);
        if (r < 0)
                return r;
        if (asprintf(&sig_path, "%s.sig", path) < 0)
                return -ENOMEM;
        r = read_file_at(AT_FDCWD, path, POLICY_MAX_BYTES, &body, &len);
        if (r == -ENOENT)
                return r;
        if (r < 0)
                return fail(reason, reason_size, "stored policy unreadable: %s", strerror(-r));
        r = read_file_at(AT_FDCWD, sig_path, 65536, &sig, &sig_len);
        if (r < 0)
                return fail(reason, reason_size, "stored policy has no signature: %s", strerror(-r));
        r = policy_verify_parse(key, body, len, sig, sig_len, user, &p, reason, reason_size);
        if (r < 0)
                return r;
        /* The hooks get the bytes verified here, not the file again. */
        if (ret_fd) {
                fd = policy_seal(body, len);
                if (fd < 0)
                        return fail(reason, reason_size, "cannot hand the policy over: %s", strerror(-fd));
                *ret_fd = fd;
        }
        *ret = TAKE_PTR(p);
        return 0;
}

/* <dir>/floor/machine or <dir>/floor/user/<name>: the newest TimeStamp
 * ever accepted for the scope. It outlives the policy file itself, so that
 * no way of losing that file lets an older signed revision back in. */
static int floor_path(const char *state_dir, const char *user, bool create, char **ret) {
        _cleanup_(freep) char *dir = NULL;
        int r;

        if (user && !policy_user_name_valid(user))
                return -EINVAL;
        if (asprintf(&dir, "%s/floor", state_dir) < 0)
                return -ENOMEM;
        r = create ? mkdir_if_missing(dir) : 0;
        if (r < 0)
                return r;
        if (user) {
                free(dir);
                if (asprintf(&dir, "%s/floor/user", state_dir) < 0) {
                        dir = NULL;
                        return -ENOMEM;
                }
                r = create ? mkdir_if_missing(dir) : 0;
                if (r < 0)
                        return r;
        }
        if (asprintf(ret, "%s/%s", dir, user ? user : "machine") < 0)
                return -ENOMEM;
        return 0;
}

int policy_floor_get(const char *state_dir, const char *user, char ret[POLICY_TIMESTAMP_SIZE]) {
        _cleanup_(freep) char *path = NULL;
        _cleanup_(freep) uint8_t *buf = NULL;
        size_t len = 0;
        time_t t;
        int r;

        r = floor_path(state_dir, user, false, &path);
        if (r < 0)
                return r;
        r = read_file_at(AT_FDCWD, path, 64, &buf, &len);
        if (r < 0)
                return r;
        while (len > 0 && (buf[len - 1] == '\n' || buf[len - 1] == ' '))
                len--;
        buf[len] = 0;
        /* Unreadable means "refuse everything" rather than "no floor":
         * only root writes this file. */
        if (len != POLICY_TIMESTAMP_SIZE - 1 || tether_timestamp_parse((const char *)buf, &t) < 0)
                return -EBADMSG;
        memcpy(ret, buf, POLICY_TIMESTAMP_SIZE);
        return 0;
}

int policy_floor_raise(const char *state_dir, const char *user, const char *timestamp) {
        _cleanup_(freep) char *path = NULL, *line = NULL;
        char cur[POLICY_TIMESTAMP_SIZE];
        int r;

        if (strlen(timestamp) != POLICY_TIMESTAMP_SIZE - 1)
                return -EINVAL;
        r = policy_floor_get(state_dir, user, cur);
        if (r >= 0 && strcmp(cur, timestamp) >= 0)
                return 0;
        if (r < 0 && r != -ENOENT)
                return r;
        r = floor_path(state_dir, user, true, &path);
        if (r < 0)
                return r;
        if (asprintf(&line, "%s\n", timestamp) < 0)
                return -ENOMEM;
        return write_file_atomic(path, line, strlen(line), 0600, FSUTIL_DURABLE);
}
