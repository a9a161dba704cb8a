// SPDX-License-Identifier: BSD-3-Clause
// Preloaded into the tests' s3rver (NODE_OPTIONS=--require this file) to make
// its PUT behave like S3's: atomic, and visible to the next GET once answered.
//
// s3rver 3.7.1 (lib/stores/filesystem.js putObject) answers a PUT before the
// object's file is written: it waits for its md5 Transform's 'finish', not for
// the file stream, and writes the file in place. So a GET right after the 200
// can stat a short or empty file and serve a short 200 (zeros to r3, which
// reads a short object as zeros), and two PUTs of one key in a row can land in
// the wrong order. Seen under ThreadSanitizer's slowness: s3.sh's
// read-modify-write of a partial chunk read the chunk its own previous PUT had
// just written as empty (or had its PUT overwritten by the previous one), and
// the verify found zeros. Real S3 is read-after-write consistent and a PUT is
// atomic. Here the body goes to a temporary file, is closed, then renamed over
// the object, before the metadata and the answer.
'use strict';
const crypto = require('crypto');
const fs = require('fs');
const path = require('path');

let store;
try {
    // process.argv[1] is s3rver's bin script; its store is ../lib/stores/filesystem.js
    const bin = fs.realpathSync(process.argv[1]);
    store = require(path.join(path.dirname(bin), '..', 'lib', 'stores', 'filesystem.js'));
} catch (e) {
    store = null;                       // not s3rver: leave it alone
}

if (store && store.prototype && typeof store.prototype.putObject === 'function') {
    store.prototype.putObject = async function putObject(object) {
        const objectPath = this.getResourcePath(object.bucket, object.key, 'object');
        await fs.promises.mkdir(path.dirname(objectPath), { recursive: true });
        const tmp = `${objectPath}.tmp-${process.pid}-${crypto.randomBytes(6).toString('hex')}`;
        const md5 = crypto.createHash('md5');
        let size = 0;
        try {
            await new Promise((resolve, reject) => {
                const out = fs.createWriteStream(tmp);
                out.on('error', reject).on('close', resolve);   // 'close': every byte is in the file
                if (Buffer.isBuffer(object.content)) {
                    md5.update(object.content);
                    size = object.content.length;
                    out.end(object.content);
                } else {
                    object.content.on('error', reject);
                    object.content.on('data', c => { md5.update(c); size += c.length; });
                    object.content.pipe(out);
                }
            });
            await fs.promises.rename(tmp, objectPath);
        } catch (e) {
            await fs.promises.unlink(tmp).catch(() => {});
            throw e;
        }
        const digest = md5.digest('hex');
        await this.putMetadata(object.bucket, object.key, object.metadata, digest);
        return { size, md5: digest };
    };
}
