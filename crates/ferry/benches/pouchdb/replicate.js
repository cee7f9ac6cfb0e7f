// The PouchDB baseline of `cargo bench -p ferry --bench changes`: N documents written on
// client A, replicated through a PouchDB server (express-pouchdb) to client B.
//
//   node replicate.js server PORT DIR     serve PouchDB databases from DIR on 127.0.0.1:PORT
//   node replicate.js pull URL DIR N      B: a live pull from URL; prints "ready", then the
//                                         time (ms since the epoch) it holds N documents
//   node replicate.js push URL DIR N      A: writes N documents locally (not timed), prints
//                                         "start MS", pushes them to URL, prints "pushed MS"
//
// Documents are the benchmark's jump_log rows: about 125 bytes of values each.
'use strict';
const PouchDB = require('pouchdb-node');

const [mode, where, dir, count] = process.argv.slice(2);
const n = Number(count);

function doc(i) {
  const id = '01900000-0000-7000-8000-' + i.toString(16).padStart(12, '0');
  return {
    _id: id,
    user_id: '01900000-0000-7000-8000-00000000a11c',
    jump_number: i,
    jumped_at: '2026-11-21T10:00:00Z',
    dropzone: 'Skydive Spaceland ' + (i % 50),
    exit_altitude_ft: 13500 + (i % 7) * 100,
    notes: 'jump ' + i + ', a clean exit and a good canopy ride',
    visible_to_connections: false,
  };
}

async function main() {
  if (mode === 'server') {
    const express = require('express');
    const Local = PouchDB.defaults({ prefix: dir.endsWith('/') ? dir : dir + '/' });
    const app = express();
    app.use('/', require('express-pouchdb')(Local, { logPath: dir + '/log.txt', mode: 'minimumForPouchDB' }));
    const server = app.listen(Number(where), '127.0.0.1', () => console.log('listening'));
    process.stdin.on('end', () => server.close(() => process.exit(0)));
    process.stdin.resume();
  } else if (mode === 'pull') {
    const db = new PouchDB(dir);
    const rep = db.replicate.from(where, { live: true, retry: true, batch_size: 1000, batches_limit: 4 });
    let done = false;
    rep.on('change', async (info) => {
      if (done) return;
      if (process.env.DEBUG) console.error('change', info.docs_written);
      if (info.docs_written >= n && !done) {
        done = true;
        console.log('complete ' + Date.now());
        rep.cancel();
      }
    });
    rep.on('error', (e) => { console.error('pull failed', e); process.exit(1); });
    console.log('ready');
  } else if (mode === 'push') {
    const db = new PouchDB(dir);
    for (let i = 0; i < n; i += 1000) {
      const docs = [];
      for (let j = i; j < Math.min(n, i + 1000); j++) docs.push(doc(j));
      await db.bulkDocs(docs);
    }
    console.log('start ' + Date.now());
    await db.replicate.to(where, { batch_size: 1000, batches_limit: 4 });
    console.log('pushed ' + Date.now());
  } else {
    console.error('usage: node replicate.js server PORT DIR | pull URL DIR N | push URL DIR N');
    process.exit(2);
  }
}

main().catch((e) => { console.error(e); process.exit(1); });
