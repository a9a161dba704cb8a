/* SPDX-License-Identifier: BSD-3-Clause */
#include <curl/curl.h>
#include <stdio.h>
#include <stdlib.h>
static size_t wr(char *p, size_t s, size_t n, void *a) { (void)p; (void)a; return s * n; }
int main(int argc, char **argv)
{
    CURL *h = curl_easy_init();
    for (int i = 0; i < 2; i++) {
        curl_easy_reset(h);
        curl_easy_setopt(h, CURLOPT_URL, argv[1]);
        curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, wr);
        if (argc > 2) { curl_easy_setopt(h, CURLOPT_AWS_SIGV4, "aws:amz:us-east-1:s3"); curl_easy_setopt(h, CURLOPT_USERPWD, "a:b"); }
        if (i == 0) curl_easy_setopt(h, CURLOPT_NOBODY, 1L);
        int rc = curl_easy_perform(h);
        printf("%d: %d\n", i, rc);
    }
    curl_easy_cleanup(h);
    return 0;
}
