/* SPDX-License-Identifier: Apache-2.0 */
#include "agent/identity.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/x509.h>

#include "common/fsutil.h"
#include "common/cleanup.h"
#include "common/strutil.h"
#include "transport/sign.h"

#define CERT_DAYS (365u * 20u)

int identity_machine_hash(const char *machine_id_file, char ret[65]) {
        _cleanup_(freep) uint8_t *buf = NULL;
        uint8_t md[EVP_MAX_MD_SIZE];
        unsigned mdlen = 0;
        size_t len;
        int r;

        r = read_file_at(AT_FDCWD, machine_id_file, 4096, &buf, &len);
        if (r < 0)
                return r;
        while (len > 0 &&
               (buf[len - 1] == '\n' || buf[len - 1] == ' ' || buf[len - 1] == '\r' || buf[len - 1] == '\t'))
                len--;
        if (!EVP_Digest(buf, len, md, &mdlen, EVP_sha256(), NULL))
                return -EIO;
        hex_encode(md, 32, ret);
        return 0;
}

struct tether_identity *identity_free(struct tether_identity *id) {
        if (!id)
                return NULL;
        tether_key_free(id->key);
        tether_key_free(id->previous_key);
        free(id->cert_pem);
        free(id);
        return NULL;
}

const char *identity_origin_name(enum identity_origin o) {
        switch (o) {
        case IDENTITY_LOADED:
                return "loaded";
        case IDENTITY_CREATED_FIRST:
                return "first start";
        case IDENTITY_CREATED_CLONE:
                return "machine-id changed";
        case IDENTITY_CREATED_DAMAGED:
                return "stored identity damaged";
        case IDENTITY_CREATED_RESET:
                return "reset";
        }
        return "unknown";
}

/* True when the certificate's public key is key. */
static int cert_matches_key(const char *cert_pem, const struct tether_key *key) {
        BIO *bio = BIO_new_mem_buf(cert_pem, -1);
        X509 *x;
        int ok;

        if (!bio)
                return -ENOMEM;
        x = PEM_read_bio_X509(bio, NULL, NULL, NULL);
        BIO_free(bio);
        if (!x)
                return -EBADMSG;
        ok = EVP_PKEY_eq(X509_get0_pubkey(x), tether_key_evp(key)) == 1;
        X509_free(x);
        return ok ? 0 : -EBADMSG;
}

static int open_dir(const char *dir) {
        int r = mkdir_p(dir, 0700), fd;

        if (r < 0)
                return r;
        fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        return fd < 0 ? -errno : fd;
}

/* Says why a stored device key that reads fine was refused: "rejected by
 * service" would leave an administrator who provisioned, say, an RSA-1024
 * key guessing (contract 2: RSA needs 2048 bits or more). */
static void describe_rejected_key(const char *key_path, char reason[256]) {
        FILE *f = fopen(key_path, "re");
        EVP_PKEY *pkey = f ? PEM_read_PrivateKey(f, NULL, NULL, NULL) : NULL;
        int type = pkey ? EVP_PKEY_get_base_id(pkey) : 0;

        if (f)
                fclose(f);
        if (type == EVP_PKEY_RSA)
                snprintf(reason, 256,
                         "the device key is RSA of %d bits, which the protocol refuses (RSA needs 2048 to "
                         "8192 bits; new keys are ECDSA P-256)",
                         EVP_PKEY_get_bits(pkey));
        else if (pkey)
                snprintf(reason, 256,
                         "the device key is of a type the protocol refuses (%s, %d bits; allowed: ECDSA "
                         "P-256, Ed25519, RSA of 2048 bits or more)",
                         EVP_PKEY_get0_type_name(pkey) ? EVP_PKEY_get0_type_name(pkey) : "unknown",
                         EVP_PKEY_get_bits(pkey));
        else
                snprintf(reason, 256, "the device key is of a type the protocol refuses");
        EVP_PKEY_free(pkey);
}

/* A rotation cut short after device.key was replaced and before
 * device.crt was: the new certificate is waiting in device.next.crt. */
static int finish_rotation(int dfd) {
        if (renameat(dfd, "device.next.crt", dfd, "device.crt") < 0)
                return -errno;
        return fsync(dfd) < 0 ? -errno : 0;
}

/* previous.key (a rollover the MP has not confirmed yet), and the leftovers
 * of a rotation cut short before its commit. */
static int load_rotation(int dfd, const char *dir, struct tether_identity *id) {
        _cleanup_(freep) char *prev = path_join(dir, "previous.key");
        struct stat st;
        int r;

        if (!prev)
                return -ENOMEM;
        (void)unlinkat(dfd, "device.next.key", 0);
        (void)unlinkat(dfd, "device.next.crt", 0);
        if (fstatat(dfd, "device.key", &st, 0) >= 0)
                id->key_created = st.st_mtime;
        r = tether_key_load_private(prev, &id->previous_key);
        if (r == -ENOENT)
                return 0;
        if (r < 0)
                return r;
        if (tether_key_equal(id->previous_key, id->key)) {
                /* The rotation never replaced device.key: nothing to roll. */
                id->previous_key = tether_key_free(id->previous_key);
                if (unlinkat(dfd, "previous.key", 0) < 0)
                        return -errno;
        }
        return 0;
}

static int identity_load(int dfd, const char *dir, const char *want_hash, struct tether_identity **ret,
                         char reason[256]) {
        _cleanup_(freep) uint8_t *hash = NULL, *cid = NULL, *cert = NULL;
        _cleanup_(freep) char *key_path = NULL;
        struct tether_identity *id;
        size_t len;
        int r;

        r = read_file_at(dfd, "machine-id.sha256", 256, &hash, &len);
        if (r == -ENOENT) {
                snprintf(reason, 256, "no stored identity");
                return -ENOENT;
        }
        if (r < 0) {
                snprintf(reason, 256, "cannot read the stored machine-id hash: %s", strerror(-r));
                return -EBADMSG;
        }
        while (len > 0 && hash[len - 1] == '\n')
                hash[--len] = 0;
        if (strcmp((char *)hash, want_hash) != 0) {
                snprintf(reason, 256,
                         "the machine-id changed since the identity was made (stored hash %.12s..., now "
                         "%.12s...): this looks like a cloned image",
                         (char *)hash, want_hash);
                return -ESTALE;
        }
        id = calloc(1, sizeof(*id));
        if (!id)
                return -ENOMEM;
        key_path = path_join(dir, "device.key");
        if (!key_path) {
                identity_free(id);
                return -ENOMEM;
        }
        r = tether_key_load_private(key_path, &id->key);
        if (r == -EKEYREJECTED) {
                describe_rejected_key(key_path, reason);
                goto bad;
        }
        if (r < 0) {
                snprintf(reason, 256, "cannot load the device key: %s", strerror(-r));
                goto bad;
        }
        r = read_file_at(dfd, "device.crt", 64 * 1024, &cert, &len);
        if (r >= 0 && cert_matches_key((char *)cert, id->key) < 0 && finish_rotation(dfd) >= 0) {
                free(cert);
                cert = NULL;
                r = read_file_at(dfd, "device.crt", 64 * 1024, &cert, &len);
        }
        if (r < 0 || cert_matches_key((char *)cert, id->key) < 0) {
                snprintf(reason, 256, "the device certificate is missing or does not match the key");
                goto bad;
        }
        r = read_file_at(dfd, "client-id", 256, &cid, &len);
        while (r >= 0 && len > 0 && cid[len - 1] == '\n')
                cid[--len] = 0;
        if (r < 0 || !tether_guid_valid((char *)cid)) {
                snprintf(reason, 256, "the stored ClientID is missing or malformed");
                goto bad;
        }
        memcpy(id->client_id, cid, TETHER_GUID_LEN);
        id->cert_pem = (char *)TAKE_PTR(cert);
        memcpy(id->machine_hash, want_hash, 65);
        r = load_rotation(dfd, dir, id);
        if (r < 0) {
                snprintf(reason, 256, "cannot read the pending key rotation: %s", strerror(-r));
                goto bad;
        }
        *ret = id;
        return 0;
bad:
        identity_free(id);
        return -EBADMSG;
}

static int identity_create(int dfd, const char *dir, const char *hash, struct tether_identity **ret) {
        _cleanup_(freep) char *key_path = NULL, *cid_line = NULL, *hash_line = NULL;
        struct tether_identity *id;
        int r;

        id = calloc(1, sizeof(*id));
        if (!id)
                return -ENOMEM;
        /* The commit marker goes first, so that a crash mid-way is seen as damage. */
        if (unlinkat(dfd, "machine-id.sha256", 0) < 0 && errno != ENOENT) {
                r = -errno;
                goto fail;
        }
        /* A new identity has nothing to roll over from. */
        if (unlinkat(dfd, "previous.key", 0) < 0 && errno != ENOENT) {
                r = -errno;
                goto fail;
        }
        r = tether_guid_new(id->client_id);
        if (r < 0)
                goto fail;
        r = tether_key_generate(TETHER_KEY_EC_P256, &id->key);
        if (r < 0)
                goto fail;
        r = tether_cert_self_signed(id->key, id->client_id, NULL, CERT_DAYS, &id->cert_pem);
        if (r < 0)
                goto fail;
        key_path = path_join(dir, "device.key");
        if (!key_path || asprintf(&cid_line, "%s\n", id->client_id) < 0 ||
            asprintf(&hash_line, "%s\n", hash) < 0) {
                r = -ENOMEM;
                goto fail;
        }
        r = tether_key_save_private(id->key, key_path);
        if (r < 0)
                goto fail;
        r = write_file_atomic_at(dfd, "device.crt", id->cert_pem, strlen(id->cert_pem), 0644,
                                 FSUTIL_DURABLE);
        if (r < 0)
                goto fail;
        r = write_file_atomic_at(dfd, "client-id", cid_line, strlen(cid_line), 0644, FSUTIL_DURABLE);
        if (r < 0)
                goto fail;
        r = write_file_atomic_at(dfd, "machine-id.sha256", hash_line, strlen(hash_line), 0644,
                                 FSUTIL_DURABLE);
        if (r < 0)
                goto fail;
        memcpy(id->machine_hash, hash, 65);
        *ret = id;
        return 0;
fail:
        identity_free(id);
        return r;
}

static int machine_hash_or_none(const char *machine_id_file, char hash[65]) {
        int r = identity_machine_hash(machine_id_file, hash);

        /* Without a machine-id there is nothing to bind to: use a fixed
         * marker, so that a machine-id appearing later counts as a change. */
        if (r == -ENOENT) {
                strscpy(hash, 65, "none");
                return 0;
        }
        return r;
}

int identity_load_or_create(const char *dir, const char *machine_id_file, struct tether_identity **ret,
                            enum identity_origin *ret_origin, char reason[256]) {
        _cleanup_(closep) int dfd = -1;
        char hash[65], why[256] = "";
        enum identity_origin origin;
        int r;

        r = machine_hash_or_none(machine_id_file, hash);
        if (r < 0)
                return r;
        dfd = open_dir(dir);
        if (dfd < 0)
                return dfd;
        r = identity_load(dfd, dir, hash, ret, why);
        if (r == 0) {
                if (ret_origin)
                        *ret_origin = IDENTITY_LOADED;
                return 0;
        }
        if (r == -ENOMEM)
                return r;
        origin = r == -ENOENT   ? IDENTITY_CREATED_FIRST
                 : r == -ESTALE ? IDENTITY_CREATED_CLONE
                                : IDENTITY_CREATED_DAMAGED;
        r = identity_create(dfd, dir, hash, ret);
        if (r < 0)
                return r;
        if (ret_origin)
                *ret_origin = origin;
        if (reason)
                strscpy(reason, 256, why);
        return 0;
}

int identity_reset(const char *dir, const char *machine_id_file, struct tether_identity **ret) {
        _cleanup_(closep) int dfd = -1;
        char hash[65];
        int r;

        r = machine_hash_or_none(machine_id_file, hash);
        if (r < 0)
                return r;
        dfd = open_dir(dir);
        if (dfd < 0)
                return dfd;
        return identity_create(dfd, dir, hash, ret);
}

static int copy_identity(const struct tether_identity *cur, struct tether_identity **ret) {
        struct tether_identity *id = calloc(1, sizeof(*id));

        if (!id)
                return -ENOMEM;
        memcpy(id->client_id, cur->client_id, TETHER_GUID_LEN);
        memcpy(id->machine_hash, cur->machine_hash, sizeof(id->machine_hash));
        *ret = id;
        return 0;
}

int identity_rotate(const char *dir, const struct tether_identity *cur, struct tether_identity **ret) {
        _cleanup_(closep) int dfd = -1;
        _cleanup_(freep) char *prev = path_join(dir, "previous.key"),
                              *next = path_join(dir, "device.next.key");
        struct tether_identity *id = NULL;
        int r;

        if (!prev || !next)
                return -ENOMEM;
        if (cur->previous_key)
                return -EBUSY;
        dfd = open_dir(dir);
        if (dfd < 0)
                return dfd;
        r = copy_identity(cur, &id);
        if (r < 0)
                return r;
        /* 1. The old key, kept until the MP confirms. */
        r = tether_key_save_private(cur->key, prev);
        if (r >= 0)
                r = tether_key_load_private(prev, &id->previous_key);
        /* 2. The new key and certificate, beside the current ones. */
        if (r >= 0)
                r = tether_key_generate(TETHER_KEY_EC_P256, &id->key);
        if (r >= 0)
                r = tether_cert_self_signed(id->key, id->client_id, NULL, CERT_DAYS, &id->cert_pem);
        if (r >= 0)
                r = tether_key_save_private(id->key, next);
        if (r >= 0)
                r = write_file_atomic_at(dfd, "device.next.crt", id->cert_pem, strlen(id->cert_pem), 0644,
                                         FSUTIL_DURABLE);
        /* 3. The commit: the key, then the certificate (a crash between the
         * two is finished at the next load). */
        if (r >= 0 && renameat(dfd, "device.next.key", dfd, "device.key") < 0)
                r = -errno;
        if (r >= 0)
                r = finish_rotation(dfd);
        if (r < 0) {
                identity_free(id);
                return r;
        }
        id->key_created = time(NULL);
        *ret = id;
        return 0;
}

int identity_rollover_done(const char *dir, struct tether_identity *id) {
        _cleanup_(closep) int dfd = open_dir(dir);

        if (dfd < 0)
                return dfd;
        if (unlinkat(dfd, "previous.key", 0) < 0 && errno != ENOENT)
                return -errno;
        if (fsync(dfd) < 0)
                return -errno;
        id->previous_key = tether_key_free(id->previous_key);
        return 0;
}
