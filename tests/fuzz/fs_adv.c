/* SPDX-License-Identifier: BSD-3-Clause */
/* Fuzz target: the r3sync advertiser's side of its connection to the hub
 * (filesync/advertise.c on filesync/conn.c): frame bounds, HAVE (a
 * receiver's hashes: the catch-up it asks for, any first/last/count), ACK,
 * ERR and unknown messages, between rounds. advertise.c is compiled into
 * this target (#include, so its static handler, catch-up and round are
 * reachable without TLS; nothing in it is changed). Two mappings of the
 * caller ("m": 3 blocks and 100 bytes; "d/n": 2 blocks; 4 KiB blocks, file
 * ids 1 and 2) are announced on a socketpair to fs_peer.h's fake hub, which
 * sends the input after byte 0 and reads everything the advertiser sends.
 * The loop is fs_adv_run's: each message is handled as it arrives. Byte 0:
 * bit 0 = a round before the first message, bit 1 = a round after each
 * ACK, bit 2 = a byte of "m" changes before each round. */
#include "fs_peer.h"

#define fs_adv_run fuzz_unused_fs_adv_run
#include "../../filesync/advertise.c"
#undef fs_adv_run

static uint8_t map_m[3 * 4096 + 100], map_n[2 * 4096];

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc;
    (void)argv;
    return 0;
}

static int round_(struct adv *a, bool change)
{
    if (change)
        map_m[(a->round * 4099) % sizeof map_m]++;
    return do_round(a);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1 || size > 256 * 1024)
        return 0;
    for (size_t i = 0; i < sizeof map_m; i++)
        map_m[i] = (uint8_t)(i * 7);
    memset(map_n, 'n', sizeof map_n);
    const struct fs_adv_map maps[2] = { { map_m, sizeof map_m, "m" }, { map_n, sizeof map_n, "d/n" } };
    struct fs_adv_opts o = { .hub = "fuzz", .maps = maps, .nmaps = 2, .block = 4096, .threads = 1,
                             .report = { .line = fs_fake_line } };
    struct adv a = { .o = &o, .block = 4096 };
    pthread_mutex_init(&a.mu, NULL);
    pthread_cond_init(&a.cv, NULL);
    if (files_open(&a) < 0)
        FUZZ_DIE("files_open: %s", r3_last_error());
    for (size_t i = 0; i < a.nfiles; i++)
        a.files[i].fid = i + 1;             /* deterministic ids, as the seeds name them */
    uint8_t *copy = malloc(size);
    if (!copy)
        FUZZ_DIE("out of memory");
    memcpy(copy, data, size);
    struct fs_fake_hub hub;
    a.c = fs_fake_start(&hub, copy + 1, size - 1);
    bool change = data[0] & 4;
    int rc = start_conn(&a);                /* the reader thread, then every FILE */
    if (rc == 0 && (data[0] & 1))
        rc = round_(&a, change);
    while (rc == 0) {
        pthread_mutex_lock(&a.mu);
        while (!a.in && !a.io_done)
            pthread_cond_wait(&a.cv, &a.mu);
        struct inmsg *m = a.in;
        if (m) {
            a.in = m->next;
            if (!a.in)
                a.in_tail = NULL;
        }
        pthread_mutex_unlock(&a.mu);
        if (!m)
            break;                          /* the connection ended and every message was handled */
        if (m->type == FS_HAVE)
            rc = catchup(&a, m);
        else if (m->type == FS_ACK && (data[0] & 2))
            rc = round_(&a, change);
        free(m);
    }
    if (a.c)
        disconnect(&a);                     /* kills the connection: the fake hub reads to the end */
    fs_fake_join(&hub);
    files_close(&a);
    pthread_mutex_destroy(&a.mu);
    pthread_cond_destroy(&a.cv);
    free(copy);
    return 0;
}
