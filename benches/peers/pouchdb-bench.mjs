#!/usr/bin/env node
// Peer benchmark (optional): PouchDB insert + replicate, memory adapter.
//
//   node pouchdb-bench.mjs [--docs 100000] [--doc-bytes 300] [--batch 1000]
//                          [--rep-batch 100] [--timeout-sec 840] [--json]
//
// (a) insert: N docs of ~doc-bytes (JSON as stored: _id + a random base64 string) are written
//     with bulkDocs in batches of `batch` into a fresh memory-adapter database. Only the
//     bulkDocs calls are timed.
// (b) replicate: PouchDB.replicate(source, target) one-shot into a second, empty memory
//     database, timed until it completes; `--rep-batch` is PouchDB's batch_size (default 100,
//     PouchDB's own default).
//
// Both databases live in this process's heap (pouchdb-adapter-memory = memdown), so this is
// not durable and gives PouchDB an advantage over on-disk stores.

import PouchDB from 'pouchdb'
import memoryAdapter from 'pouchdb-adapter-memory'
import { createRequire } from 'node:module'
import { randomBytes } from 'node:crypto'

const require = createRequire(import.meta.url)
PouchDB.plugin(memoryAdapter)

function parseArgs (argv) {
  const o = { docs: 100000, docBytes: 300, batch: 1000, repBatch: 100, timeoutSec: 840, json: false }
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i]
    const int = () => {
      if (i + 1 >= argv.length) throw new Error(`missing value for ${a}`)
      const v = Number(argv[++i])
      if (!Number.isInteger(v) || v <= 0) throw new Error(`${a} needs a positive integer`)
      return v
    }
    switch (a) {
      case '--docs': o.docs = int(); break
      case '--doc-bytes': o.docBytes = int(); break
      case '--batch': o.batch = int(); break
      case '--rep-batch': o.repBatch = int(); break
      case '--timeout-sec': o.timeoutSec = int(); break
      case '--json': o.json = true; break
      case '-h': case '--help':
        console.log('usage: node pouchdb-bench.mjs [--docs N] [--doc-bytes B] [--batch K] [--rep-batch R] [--timeout-sec S] [--json]')
        process.exit(0)
        break
      default: throw new Error(`unknown argument ${a}`)
    }
  }
  return o
}

const opts = parseArgs(process.argv.slice(2))
const log = (...a) => { if (!opts.json) console.log(...a) }
const fmt = (n, d = 0) => n.toLocaleString('en-US', { maximumFractionDigits: d, minimumFractionDigits: d })
const rssBytes = () => process.resourceUsage().maxRSS * 1024 // maxRSS is in KiB

function withTimeout (promise, sec, what, onTimeout) {
  let timer
  const t = new Promise((resolve, reject) => {
    timer = setTimeout(() => {
      try { onTimeout && onTimeout() } catch {}
      reject(new Error(`${what} timed out after ${sec} s`))
    }, sec * 1000)
  })
  return Promise.race([promise, t]).finally(() => clearTimeout(timer))
}

const pouchVersion = require('pouchdb/package.json').version
const result = {
  bench: 'pouchdb',
  pouchdb_version: pouchVersion,
  adapter: 'memory (pouchdb-adapter-memory ' + require('pouchdb-adapter-memory/package.json').version + ')',
  node_version: process.version,
  docs: opts.docs,
  batch: opts.batch,
  rep_batch_size: opts.repBatch
}

// One doc: {"_id":"doc-000000001","v":"<base64>"} padded so its JSON is ~docBytes.
const overhead = JSON.stringify({ _id: 'doc-000000000', v: '' }).length
const vChars = Math.max(1, opts.docBytes - overhead)
const rawBytes = Math.ceil(vChars * 3 / 4)
result.doc_json_bytes = overhead + vChars

const suffix = `${process.pid}-${Date.now()}`
const src = new PouchDB(`bench-src-${suffix}`, { adapter: 'memory' })
const dst = new PouchDB(`bench-dst-${suffix}`, { adapter: 'memory' })
let exitCode = 0
try {
  const deadline = Date.now() + opts.timeoutSec * 1000
  log(`pouchdb ${pouchVersion} (memory adapter), node ${process.version}`)
  log(`insert: ${fmt(opts.docs)} docs of ~${result.doc_json_bytes} B JSON, bulkDocs batches of ${opts.batch}`)
  let insNs = 0n
  const cpu0 = process.cpuUsage()
  for (let done = 0; done < opts.docs;) {
    if (Date.now() > deadline) throw new Error(`insert timed out after ${opts.timeoutSec} s at ${done} docs`)
    const n = Math.min(opts.batch, opts.docs - done)
    const docs = new Array(n)
    for (let j = 0; j < n; j++) {
      const id = 'doc-' + String(done + j).padStart(9, '0')
      docs[j] = { _id: id, v: randomBytes(rawBytes).toString('base64').slice(0, vChars) }
    }
    const t0 = process.hrtime.bigint()
    const res = await src.bulkDocs(docs)
    insNs += process.hrtime.bigint() - t0
    for (const r of res) if (r.error) throw new Error(`bulkDocs: ${r.error} ${r.reason || ''}`)
    done += n
  }
  const insS = Number(insNs) / 1e9
  const cpuI = process.cpuUsage(cpu0)
  result.insert = {
    seconds: insS,
    docs_per_s: opts.docs / insS,
    cpu_user_s: cpuI.user / 1e6,
    cpu_sys_s: cpuI.system / 1e6,
    peak_rss_bytes_so_far: rssBytes()
  }
  log(`  ${fmt(insS, 2)} s  ${fmt(result.insert.docs_per_s)} docs/s`)

  log(`replicate: one-shot PouchDB.replicate to a second memory db, batch_size ${opts.repBatch}`)
  const cpu1 = process.cpuUsage()
  const r0 = process.hrtime.bigint()
  const rep = PouchDB.replicate(src, dst, { batch_size: opts.repBatch })
  const remaining = Math.max(1, Math.ceil((deadline - Date.now()) / 1000))
  const info = await withTimeout(rep, remaining, 'replication', () => rep.cancel())
  const repS = Number(process.hrtime.bigint() - r0) / 1e9
  const cpuR = process.cpuUsage(cpu1)
  const dstInfo = await dst.info()
  if (info.ok === false || dstInfo.doc_count !== opts.docs) {
    throw new Error(`replication incomplete: ok=${info.ok} target doc_count=${dstInfo.doc_count}`)
  }
  result.replicate = {
    seconds: repS,
    docs_per_s: opts.docs / repS,
    docs_written: info.docs_written,
    cpu_user_s: cpuR.user / 1e6,
    cpu_sys_s: cpuR.system / 1e6
  }
  log(`  ${fmt(repS, 2)} s  ${fmt(result.replicate.docs_per_s)} docs/s  (cpu user ${fmt(result.replicate.cpu_user_s, 1)} s, sys ${fmt(result.replicate.cpu_sys_s, 1)} s)`)
} catch (err) {
  exitCode = 1
  result.error = String(err && err.message ? err.message : err)
  if (!opts.json) console.error('error:', result.error)
} finally {
  try { await src.destroy() } catch {}
  try { await dst.destroy() } catch {}
  result.peak_rss_bytes = rssBytes()
  log(`peak RSS ${fmt(result.peak_rss_bytes / 1048576, 0)} MiB`)
  if (opts.json) process.stdout.write(JSON.stringify(result) + '\n')
  process.exit(exitCode)
}
