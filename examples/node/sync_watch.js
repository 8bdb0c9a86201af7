#!/usr/bin/env node
// Starts a sync through the gateway, follows it with WatchSync to its final status, then
// shows how a failed call's google.rpc details decode.
//
//   npm ci --prefix examples/node
//   node examples/node/sync_watch.js [ADDRESS] [COMPANY_ID] [--api-key KEY] [--timeout SECONDS]
//
// ADDRESS defaults to localhost:50051 and COMPANY_ID to 499 (a company of the emulator's
// demo key). The service is loaded from proto/ at run time with @grpc/proto-loader; the
// google/protobuf imports of sync.proto resolve to the copies bundled with protobufjs.
//
// Exit status: 0 when the sync reached a final status and GetSync of an unknown id failed
// with NOT_FOUND whose google.rpc.ErrorInfo reason is RESOURCE_NOT_FOUND; 1 otherwise.
'use strict';

const path = require('node:path');
const { parseArgs } = require('node:util');

const grpc = require('@grpc/grpc-js');
const protoLoader = require('@grpc/proto-loader');
const protobuf = require('protobufjs');

const PROTO_DIR = path.resolve(__dirname, '..', '..', 'proto');
const SYNC_PROTO = 'commenda/sync/v1/sync.proto';

// A well-formed sync id that no sync has, so GetSync fails upstream with NOT_FOUND.
const UNKNOWN_SYNC_ID = '00000000-0000-4000-8000-000000000000';

const FINAL_STATUSES = new Set(['SUCCESS', 'FAILED', 'PARTIAL_SUCCESS']);

// The google.rpc messages the gateway puts in grpc-status-details-bin, declared here with
// protobufjs reflection so that no googleapis proto files are needed. Field names and
// numbers are those of google/rpc/status.proto and google/rpc/error_details.proto.
const RPC_TYPES = protobuf.Root.fromJSON({
  nested: {
    google: {
      nested: {
        protobuf: {
          nested: {
            Any: {
              fields: { type_url: { type: 'string', id: 1 }, value: { type: 'bytes', id: 2 } },
            },
            Duration: {
              fields: { seconds: { type: 'int64', id: 1 }, nanos: { type: 'int32', id: 2 } },
            },
          },
        },
        rpc: {
          nested: {
            Status: {
              fields: {
                code: { type: 'int32', id: 1 },
                message: { type: 'string', id: 2 },
                details: { rule: 'repeated', type: 'google.protobuf.Any', id: 3 },
              },
            },
            ErrorInfo: {
              fields: {
                reason: { type: 'string', id: 1 },
                domain: { type: 'string', id: 2 },
                metadata: { keyType: 'string', type: 'string', id: 3 },
              },
            },
            RequestInfo: {
              fields: {
                request_id: { type: 'string', id: 1 },
                serving_data: { type: 'string', id: 2 },
              },
            },
            ResourceInfo: {
              fields: {
                resource_type: { type: 'string', id: 1 },
                resource_name: { type: 'string', id: 2 },
                owner: { type: 'string', id: 3 },
                description: { type: 'string', id: 4 },
              },
            },
            BadRequest: {
              fields: { field_violations: { rule: 'repeated', type: 'FieldViolation', id: 1 } },
              nested: {
                FieldViolation: {
                  fields: {
                    field: { type: 'string', id: 1 },
                    description: { type: 'string', id: 2 },
                  },
                },
              },
            },
            RetryInfo: {
              fields: { retry_delay: { type: 'google.protobuf.Duration', id: 1 } },
            },
          },
        },
      },
    },
  },
});
const Status = RPC_TYPES.lookupType('google.rpc.Status');

function parseCommandLine() {
  const { values, positionals } = parseArgs({
    allowPositionals: true,
    options: {
      'api-key': { type: 'string' },
      timeout: { type: 'string', default: '120' },
    },
  });
  if (positionals.length > 2) {
    throw new Error('usage: sync_watch.js [ADDRESS] [COMPANY_ID] [--api-key KEY] [--timeout S]');
  }
  const companyId = Number(positionals[1] ?? '499');
  const timeoutSeconds = Number(values.timeout);
  if (!Number.isInteger(companyId) || !(timeoutSeconds > 0)) {
    throw new Error('COMPANY_ID must be an integer and --timeout a positive number');
  }
  return {
    address: positionals[0] ?? 'localhost:50051',
    companyId,
    apiKey: values['api-key'],
    timeoutSeconds,
  };
}

function loadSyncService() {
  const definition = protoLoader.loadSync(SYNC_PROTO, {
    includeDirs: [PROTO_DIR],
    keepCase: false, // fields in camelCase: syncId, jobCounts, lastPollTime
    longs: String, // int64 and uint64 (company ids, revisions) as decimal strings
    enums: String, // enum values by name: SYNC_STATUS_RUNNING
    defaults: true,
    oneofs: true, // WatchSyncResponse.event names the field that is set
  });
  return grpc.loadPackageDefinition(definition).commenda.sync.v1.SyncService;
}

// The enum value's name without its type prefix: SYNC_STATUS_RUNNING becomes RUNNING.
function shortStatus(name) {
  return name.replace(/^SYNC_STATUS_/, '');
}

function describeCounts(counts) {
  const { total, success, failed, running, pending } = counts;
  return (
    `total=${total} success=${success} failed=${failed} ` +
    `running=${running} pending=${pending}`
  );
}

function timestampText(timestamp) {
  if (!timestamp) return '-';
  return new Date(Number(timestamp.seconds) * 1000 + timestamp.nanos / 1e6).toISOString();
}

function unary(client, method, request, metadata) {
  const deadline = Date.now() + 30_000;
  return new Promise((resolve, reject) => {
    client[method](request, metadata, { deadline }, (error, response) => {
      if (error) reject(error);
      else resolve(response);
    });
  });
}

// Prints every message of the sync's WatchSync stream; returns the last status seen.
async function watch(client, syncId, metadata, timeoutSeconds) {
  const deadline = Date.now() + timeoutSeconds * 1000;
  const call = client.watchSync({ syncId }, metadata, { deadline });
  let status = null;
  for await (const event of call) {
    if (event.event === 'state') {
      const { sync, revision } = event.state;
      status = shortStatus(sync.status);
      console.log(
        `state     revision=${revision} status=${status} jobs: ${describeCounts(sync.jobCounts)}`,
      );
    } else if (event.event === 'heartbeat') {
      const beat = event.heartbeat;
      console.log(
        `heartbeat last_poll=${timestampText(beat.lastPollTime)} ` +
          `consecutive_failures=${beat.consecutiveFailures}`,
      );
    }
  }
  return status;
}

// The type name of one google.protobuf.Any detail and its fields as JSON.
function decodeDetail(detail) {
  const name = detail.type_url.slice(detail.type_url.lastIndexOf('/') + 1);
  const type = name.startsWith('google.rpc.') ? RPC_TYPES.lookup(name) : null;
  if (!(type instanceof protobuf.Type)) {
    return { name, text: `(not decoded, ${detail.value.length} bytes)` };
  }
  const message = type.decode(detail.value);
  const fields = type.toObject(message, { longs: String });
  return { name, message: fields, text: JSON.stringify(fields) };
}

// Prints a failed call's code, message and details; true when it is the expected NOT_FOUND
// whose google.rpc.ErrorInfo gives the reason RESOURCE_NOT_FOUND.
function showError(error) {
  console.log(`  code: ${grpc.status[error.code]}`);
  console.log(`  message: ${error.details}`);
  const [raw] = error.metadata ? error.metadata.get('grpc-status-details-bin') : [];
  if (!raw) {
    console.log('  no google.rpc.Status in grpc-status-details-bin');
    return false;
  }

  const reasons = [];
  for (const detail of Status.decode(raw).details) {
    const { name, message, text } = decodeDetail(detail);
    console.log(`  detail ${name} ${text}`);
    if (name === 'google.rpc.ErrorInfo') reasons.push(message.reason);
  }
  if (error.code !== grpc.status.NOT_FOUND || reasons.join() !== 'RESOURCE_NOT_FOUND') {
    console.log(`  expected NOT_FOUND with ErrorInfo reason RESOURCE_NOT_FOUND, got ${reasons}`);
    return false;
  }
  return true;
}

async function run(options, client) {
  const metadata = new grpc.Metadata();
  if (options.apiKey) metadata.set('x-api-key', options.apiKey);

  const created = await unary(client, 'createSync', { companyId: options.companyId }, metadata);
  const models = created.dataModelsSyncing.join(', ');
  console.log(`created sync ${created.syncId} of company ${options.companyId} (${models})`);

  let status;
  try {
    status = await watch(client, created.syncId, metadata, options.timeoutSeconds);
  } catch (error) {
    console.log(`WatchSync failed: ${grpc.status[error.code]}: ${error.details}`);
    return 1;
  }
  if (!FINAL_STATUSES.has(status)) {
    console.log(`the stream ended before a final status (last seen: ${status})`);
    return 1;
  }
  console.log(`final status: ${status}`);

  console.log(`GetSync of unknown sync ${UNKNOWN_SYNC_ID}:`);
  try {
    await unary(client, 'getSync', { syncId: UNKNOWN_SYNC_ID }, metadata);
  } catch (error) {
    return showError(error) ? 0 : 1;
  }
  console.log('  unexpectedly succeeded');
  return 1;
}

async function main() {
  const options = parseCommandLine();
  const SyncService = loadSyncService();
  const client = new SyncService(options.address, grpc.credentials.createInsecure());
  try {
    return await run(options, client);
  } catch (error) {
    const code = error.code === undefined ? '' : `${grpc.status[error.code]}: `;
    console.error(`call failed: ${code}${error.details ?? error.message}`);
    return 1;
  } finally {
    client.close();
  }
}

main().then(
  (code) => {
    process.exitCode = code;
  },
  (error) => {
    console.error(error.message);
    process.exitCode = 1;
  },
);
