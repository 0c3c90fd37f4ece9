#!/usr/bin/env node
// Peer benchmark: Hypercore append + replicate, for scale against casesync's sync-bench.
//
//   node hypercore-bench.mjs [--blocks 1000000] [--block-bytes 300] [--batch 1000]
//                            [--timeout-sec 840] [--dir /tmp] [--keep] [--linear] [--json]
//
// (a) append: N blocks of `block-bytes` random bytes to a fresh core, `batch` blocks per
//     core.append([...]) call. Only the append calls are timed (filling the buffers is not).
// (b) replicate: a second core (same key, its own storage dir) is opened, then
//     core.replicate(true) is piped to core2.replicate(false) in-process and core2 downloads
//     everything with core2.download({ start: 0, end: -1 }) (Hypercore's default order, which
//     is not linear; --linear asks for linear: true); timed from creating the streams until
//     core2.contiguousLength === N.
//
// Storage: Hypercore 11 only supports its own on-disk storage (hypercore-storage, which is
// RocksDB via rocksdb-native); random-access-memory is no longer accepted. Each core gets its
// own directory under --dir (default: os.tmpdir()), removed at the end unless --keep.
//
// Everything runs in one process, so CPU time and peak RSS cover both cores.

import Hypercore from 'hypercore'
import { createRequire } from 'node:module'
import { randomFillSync } from 'node:crypto'
import { mkdtempSync, rmSync, readdirSync, statSync } from 'node:fs'
import { tmpdir } from 'node:os'
import path from 'node:path'

const require = createRequire(import.meta.url)

function parseArgs (argv) {
  const o = { blocks: 1000000, blockBytes: 300, batch: 1000, timeoutSec: 840, dir: tmpdir(), keep: false, linear: false, json: false }
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i]
    const next = () => {
      if (i + 1 >= argv.length) throw new Error(`missing value for ${a}`)
      return argv[++i]
    }
    const int = () => {
      const v = Number(next())
      if (!Number.isInteger(v) || v <= 0) throw new Error(`${a} needs a positive integer`)
      return v
    }
    switch (a) {
      case '--blocks': o.blocks = int(); break
      case '--block-bytes': o.blockBytes = int(); break
      case '--batch': o.batch = int(); break
      case '--timeout-sec': o.timeoutSec = int(); break
      case '--dir': o.dir = next(); break
      case '--keep': o.keep = true; break
      case '--linear': o.linear = true; break
      case '--json': o.json = true; break
      case '-h': case '--help':
        console.log('usage: node hypercore-bench.mjs [--blocks N] [--block-bytes B] [--batch K] [--timeout-sec S] [--dir D] [--keep] [--linear] [--json]')
        process.exit(0)
        break
      default: throw new Error(`unknown argument ${a}`)
    }
  }
  return o
}

function duBytes (p) {
  let total = 0
  const st = statSync(p)
  if (!st.isDirectory()) return st.size
  for (const e of readdirSync(p)) total += duBytes(path.join(p, e))
  return total
}

const log = (...a) => { if (!opts.json) console.log(...a) }
const fmt = (n, d = 0) => n.toLocaleString('en-US', { maximumFractionDigits: d, minimumFractionDigits: d })
const rssBytes = () => process.resourceUsage().maxRSS * 1024 // maxRSS is in KiB

const opts = parseArgs(process.argv.slice(2))
const hypercoreVersion = require('hypercore/package.json').version
const base = mkdtempSync(path.join(opts.dir, 'hypercore-bench-'))
const dirA = path.join(base, 'writer')
const dirB = path.join(base, 'reader')

const result = {
  bench: 'hypercore',
  hypercore_version: hypercoreVersion,
  node_version: process.version,
  storage: 'hypercore-storage (RocksDB, on disk)',
  dir: base,
  blocks: opts.blocks,
  block_bytes: opts.blockBytes,
  batch: opts.batch,
  linear_download: opts.linear,
  payload_bytes: opts.blocks * opts.blockBytes
}

let core, core2, s1, s2
let exitCode = 0
try {
  core = new Hypercore(dirA)
  await core.ready()

  // (a) append
  log(`hypercore ${hypercoreVersion}, node ${process.version}, storage ${base}`)
  log(`append: ${fmt(opts.blocks)} blocks x ${opts.blockBytes} B in arrays of ${opts.batch}`)
  let appendNs = 0n
  const appendWall0 = process.hrtime.bigint()
  const cpu0 = process.cpuUsage()
  for (let done = 0; done < opts.blocks;) {
    const n = Math.min(opts.batch, opts.blocks - done)
    // fresh buffers per batch: hypercore may hold on to them until flushed
    const buf = Buffer.allocUnsafe(n * opts.blockBytes)
    randomFillSync(buf)
    const arr = new Array(n)
    for (let j = 0; j < n; j++) arr[j] = buf.subarray(j * opts.blockBytes, (j + 1) * opts.blockBytes)
    const t0 = process.hrtime.bigint()
    await core.append(arr)
    appendNs += process.hrtime.bigint() - t0
    done += n
  }
  const appendWallS = Number(process.hrtime.bigint() - appendWall0) / 1e9
  const appendS = Number(appendNs) / 1e9
  const cpuA = process.cpuUsage(cpu0)
  if (core.length !== opts.blocks) throw new Error(`writer length ${core.length} != ${opts.blocks}`)
  result.append = {
    seconds: appendS,
    wall_seconds_incl_data_gen: appendWallS,
    blocks_per_s: opts.blocks / appendS,
    mb_per_s: result.payload_bytes / 1e6 / appendS,
    cpu_user_s: cpuA.user / 1e6,
    cpu_sys_s: cpuA.system / 1e6,
    peak_rss_bytes_so_far: rssBytes()
  }
  log(`  ${fmt(appendS, 2)} s  ${fmt(result.append.blocks_per_s)} blocks/s  ${fmt(result.append.mb_per_s, 1)} MB/s  (cpu user ${fmt(result.append.cpu_user_s, 1)} s, sys ${fmt(result.append.cpu_sys_s, 1)} s)`)

  // (b) replicate
  core2 = new Hypercore(dirB, core.key)
  await core2.ready()
  log(`replicate: to a second core over an in-process stream pair, download all`)
  const cpu1 = process.cpuUsage()
  const rep0 = process.hrtime.bigint()
  s1 = core.replicate(true)
  s2 = core2.replicate(false)
  s1.on('error', () => {})
  s2.on('error', () => {})
  s1.pipe(s2).pipe(s1)
  let downloaded = 0
  core2.on('download', () => { downloaded++ })
  core2.download({ start: 0, end: -1, linear: opts.linear })

  const deadline = Date.now() + opts.timeoutSec * 1000
  let lastLog = Date.now()
  while (core2.contiguousLength < opts.blocks) {
    if (Date.now() > deadline) {
      result.replicate = { timed_out: true, timeout_sec: opts.timeoutSec, contiguous_length: core2.contiguousLength, downloaded }
      throw new Error(`replication timed out after ${opts.timeoutSec} s at ${core2.contiguousLength}/${opts.blocks} blocks`)
    }
    await new Promise((resolve) => setTimeout(resolve, 20))
    if (!opts.json && Date.now() - lastLog > 10000) {
      lastLog = Date.now()
      const el = Number(process.hrtime.bigint() - rep0) / 1e9
      console.log(`  ... ${fmt(downloaded)} blocks downloaded, contiguous ${fmt(core2.contiguousLength)}, after ${fmt(el, 0)} s`)
    }
  }
  const repS = Number(process.hrtime.bigint() - rep0) / 1e9
  const cpuR = process.cpuUsage(cpu1)
  result.replicate = {
    seconds: repS,
    blocks_per_s: opts.blocks / repS,
    mb_per_s: result.payload_bytes / 1e6 / repS,
    cpu_user_s: cpuR.user / 1e6,
    cpu_sys_s: cpuR.system / 1e6
  }
  log(`  ${fmt(repS, 2)} s  ${fmt(result.replicate.blocks_per_s)} blocks/s  ${fmt(result.replicate.mb_per_s, 1)} MB/s  (cpu user ${fmt(result.replicate.cpu_user_s, 1)} s, sys ${fmt(result.replicate.cpu_sys_s, 1)} s, both cores in one process)`)

  // spot check: the replica serves the same bytes
  for (const i of [0, Math.floor(opts.blocks / 2), opts.blocks - 1]) {
    const [x, y] = await Promise.all([core.get(i), core2.get(i, { wait: false })])
    if (!y || !x.equals(y)) throw new Error(`block ${i} differs on the replica`)
  }
} catch (err) {
  exitCode = 1
  result.error = String(err && err.message ? err.message : err)
  if (!opts.json) console.error('error:', result.error)
} finally {
  try { s1 && s1.destroy() } catch {}
  try { s2 && s2.destroy() } catch {}
  try { core && await core.close() } catch {}
  try { core2 && await core2.close() } catch {}
  result.peak_rss_bytes = rssBytes()
  try {
    result.disk_bytes = { writer: duBytes(dirA), reader: duBytes(dirB) }
  } catch {}
  if (!opts.keep) rmSync(base, { recursive: true, force: true })
  log(`peak RSS ${fmt(result.peak_rss_bytes / 1048576, 0)} MiB` +
    (result.disk_bytes ? `, on disk writer ${fmt(result.disk_bytes.writer / 1e6, 0)} MB, reader ${fmt(result.disk_bytes.reader / 1e6, 0)} MB` : ''))
  if (opts.json) process.stdout.write(JSON.stringify(result) + '\n')
  process.exit(exitCode)
}
