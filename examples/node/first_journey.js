'use strict';
/*
 * cjo's first journey from Node.js: the same steps as examples/first_journey.py, with
 * @grpc/grpc-js and @grpc/proto-loader reading protos/ at run time (no generated code).
 *
 *   cd examples/node && npm ci
 *   CJO_API_KEY=cjo_... node first_journey.js
 *
 * It first shows the Struct trap refused (a trait written {string_value: ...} is INVALID_ARGUMENT
 * naming the field), then creates and publishes an email template, publishes the journey "on signed_up -> send the
 * welcome email", sends one signed_up event, waits until the enrollment has completed and
 * delivery has sent the email, then sends a deliberately bad request and prints the rich error
 * (google.rpc.Status -> ErrorInfo, BadRequest) decoded from the `grpc-status-details-bin`
 * trailer. Addresses come from CJO_<SERVICE>_TARGET (default 127.0.0.1:5005x, as `make run`),
 * the protos from CJO_PROTOS (default ../../protos). Exit code 0 when all of that happened.
 */

const crypto = require('node:crypto');
const path = require('node:path');

const grpc = require('@grpc/grpc-js');
const protoLoader = require('@grpc/proto-loader');
const protobuf = require('protobufjs');

const PROTOS = process.env.CJO_PROTOS || path.resolve(__dirname, '..', '..', 'protos');
const WAIT_SECONDS = Number(process.env.CJO_WAIT_SECONDS || 30);

// keepCase: field names as the protos spell them (message_id, event_trigger), the same names the
// docs and the errors' field violations use. enums: String lets us write 'CHANNEL_EMAIL'.
const LOADER_OPTIONS = {
  keepCase: true, longs: String, enums: String, defaults: true, oneofs: true,
  includeDirs: [PROTOS],
};

const definition = protoLoader.loadSync([
  'cjo/identity/v1/identity_service.proto',
  'cjo/content/v1/content_service.proto',
  'cjo/orchestration/v1/orchestration_service.proto',
  'cjo/delivery/v1/delivery_service.proto',
], LOADER_OPTIONS);
const api = grpc.loadPackageDefinition(definition);

// ---------------------------------------------------------------------------------------------
// The Struct trap.
//
// keepCase: true applies to the .proto files proto-loader parses, but google.protobuf.Struct,
// Value and ListValue come from protobufjs's built-in descriptors, whose fields are camelCase
// whatever keepCase says: stringValue, numberValue, boolValue, nullValue, structValue,
// listValue. A Value written in the protos' spelling, {string_value: 'ada@example.com'}, has no
// field protobufjs knows: it is dropped without an error and the Value is sent with no kind.
// cjo refuses such a Value (INVALID_ARGUMENT naming the field, e.g. events[0].traits.email)
// rather than store null, so the mistake shows at the call, not later as a journey failing
// with "no address". A plain object ({email: 'ada@example.com'}) where a Struct is expected is
// dropped the same way, and arrives as an empty Struct: no trait, and no error either. So every
// Struct is built with toStruct below; main() shows the refusal at run time.
// ---------------------------------------------------------------------------------------------

/** A JavaScript value as a google.protobuf.Value in proto-loader's (camelCase) shape. */
function toValue(value) {
  if (value === null) return { nullValue: 'NULL_VALUE' };
  switch (typeof value) {
    case 'string': return { stringValue: value };
    case 'boolean': return { boolValue: value };
    case 'number':
      // protobuf's Value holds a double; NaN and Infinity are refused by cjo (INVALID_ARGUMENT).
      if (!Number.isFinite(value)) throw new TypeError(`not a finite number: ${value}`);
      return { numberValue: value };
    case 'object':
      if (Array.isArray(value)) return { listValue: { values: value.map(toValue) } };
      return { structValue: toStruct(value) };
    default:
      // undefined, bigint, functions, symbols: no JSON equivalent, so no silent guess either.
      throw new TypeError(`no google.protobuf.Value for a ${typeof value}`);
  }
}

/** A plain object as a google.protobuf.Struct. */
function toStruct(object) {
  return {
    fields: Object.fromEntries(Object.entries(object).map(([key, v]) => [key, toValue(v)])),
  };
}

/** The JavaScript value of a decoded google.protobuf.Value (oneofs: true names its kind). */
function fromValue(value) {
  switch (value.kind) {
    case 'stringValue': return value.stringValue;
    case 'numberValue': return value.numberValue;
    case 'boolValue': return value.boolValue;
    case 'structValue': return fromStruct(value.structValue);
    case 'listValue': return (value.listValue.values || []).map(fromValue);
    default: return null; // nullValue (cjo never stores a Value with no kind)
  }
}

function fromStruct(struct) {
  return Object.fromEntries(
    Object.entries((struct && struct.fields) || {}).map(([key, v]) => [key, fromValue(v)]));
}

// ---------------------------------------------------------------------------------------------
// Rich errors: a failed call's google.rpc.Status travels, serialized, in the trailer
// `grpc-status-details-bin`; its details are Any messages (ErrorInfo, BadRequest, ...). The
// protos are protos/google/rpc/{status,error_details}.proto; protobufjs decodes them (proto-loader
// only builds serializers for the request and response types of services).
// ---------------------------------------------------------------------------------------------

const rpcTypes = new protobuf.Root();
rpcTypes.resolvePath = (_origin, target) => (
  target.startsWith('google/protobuf/') ? target : path.join(PROTOS, target));
rpcTypes.loadSync(['google/rpc/status.proto', 'google/rpc/error_details.proto'], {
  keepCase: true,
});
const Status = rpcTypes.lookupType('google.rpc.Status');

/** The details of a google.rpc.Status (Any messages: {type_url, value}), unpacked. */
function unpackDetails(details) {
  return (details || []).map((any) => {
    // type_url is "type.googleapis.com/google.rpc.ErrorInfo"; the name follows the last slash.
    const typeName = any.type_url.slice(any.type_url.lastIndexOf('/') + 1);
    const type = rpcTypes.lookupTypeOrEnum(typeName);
    return { '@type': typeName, ...type.toObject(type.decode(any.value), { defaults: true }) };
  });
}

/** The google.rpc.Status of a failed grpc-js call, its details unpacked, or null. */
function richStatus(error) {
  const [bytes] = (error.metadata && error.metadata.get('grpc-status-details-bin')) || [];
  if (!bytes) return null;
  const status = Status.toObject(Status.decode(bytes), { defaults: true });
  status.details = unpackDetails(status.details);
  return status;
}

/** Prints a google.rpc.Status's ErrorInfo and BadRequest details; whether it had a BadRequest. */
function printDetails(details) {
  for (const detail of details) {
    if (detail['@type'] === 'google.rpc.ErrorInfo') {
      console.log(`  ErrorInfo reason=${detail.reason} domain=${detail.domain}`);
    } else if (detail['@type'] === 'google.rpc.BadRequest') {
      for (const violation of detail.field_violations) {
        console.log(`  BadRequest ${violation.field}: ${violation.description}`);
      }
    } else {
      console.log(`  ${detail['@type']}`);
    }
  }
  return details.some((d) => d['@type'] === 'google.rpc.BadRequest');
}

// ---------------------------------------------------------------------------------------------

function target(service, port) {
  return process.env[`CJO_${service.toUpperCase()}_TARGET`] || `127.0.0.1:${port}`;
}

function client(Service, service, port) {
  return new Service(target(service, port), grpc.credentials.createInsecure());
}

/** A unary call as a promise, with the API key and a deadline. */
function call(stub, method, request, metadata) {
  return new Promise((resolve, reject) => {
    stub[method](request, metadata, { deadline: Date.now() + 10_000 },
      (error, response) => (error ? reject(error) : resolve(response)));
  });
}

async function main() {
  const apiKey = process.env.CJO_API_KEY;
  if (!apiKey) {
    console.error('set CJO_API_KEY to the key `make run` printed');
    return 2;
  }
  const auth = new grpc.Metadata();
  auth.set('authorization', `Bearer ${apiKey}`);
  const v1 = api.cjo;
  const identity = client(v1.identity.v1.IdentityService, 'identity', 50051);
  const content = client(v1.content.v1.ContentService, 'content', 50052);
  const orchestration = client(v1.orchestration.v1.OrchestrationService, 'orchestration', 50053);
  const delivery = client(v1.delivery.v1.DeliveryService, 'delivery', 50054);

  // 0. The trap, shown: a trait written in the protos' spelling ({string_value: ...}) leaves
  //    as a Value with no kind, and cjo refuses the event (IngestEvents answers each event with
  //    its own google.rpc.Status, whose BadRequest names the field) instead of storing null.
  const trap = await call(identity, 'IngestEvents', {
    events: [{
      message_id: crypto.randomUUID(),
      type: 'EVENT_TYPE_TRACK',
      name: 'struct_trap',
      identifiers: [{ type: 'user_id', value: 'node-example-trap' }],
      traits: { fields: { email: { string_value: 'ada@example.com' } } },
    }],
  }, auth);
  const [trapped] = trap.results;
  if (!trapped.status || trapped.status.code !== grpc.status.INVALID_ARGUMENT) {
    console.error('a Value with no kind was accepted');
    return 1;
  }
  console.log(`struct:   {string_value: ...} refused: ${grpc.status[trapped.status.code]}`);
  if (!printDetails(unpackDetails(trapped.status.details))) return 1;

  // 1. Content: an email template in Liquid, published. request_id makes re-running safe.
  try {
    await call(content, 'CreateContentItem', {
      content_item: {
        key: 'welcome-email-node',
        display_name: 'Welcome email (Node example)',
        email: {
          subject: "Welcome to Acme, {{ profile.first_name | default: 'friend' }}!",
          html: '<h1>Hi {{ profile.first_name }}!</h1><p>Thanks for choosing the'
            + ' {{ event.plan }} plan.</p>',
        },
      },
      request_id: 'node-example-welcome-email',
    }, auth);
  } catch (error) {
    if (error.code !== grpc.status.ALREADY_EXISTS) throw error;
  }
  await call(content, 'PublishContentItem', {
    name: 'contentItems/welcome-email-node', request_id: 'node-example-publish-welcome-email',
  }, auth);
  console.log('content:  contentItems/welcome-email-node');

  // 2. The journey: on signed_up, send the welcome email, then exit.
  let { journey } = await call(orchestration, 'CreateJourney', {
    journey: {
      display_name: 'Welcome new sign-ups (Node example)',
      event_trigger: { event_name: 'signed_up' },
      entry_node_id: 'send-welcome',
      nodes: [
        { id: 'send-welcome', send: { content_key: 'welcome-email-node', channel: 'CHANNEL_EMAIL',
          next_node_id: 'done' } },
        { id: 'done', exit: {} },
      ],
    },
    request_id: 'node-example-welcome-journey',
  }, auth);
  ({ journey } = await call(orchestration, 'PublishJourney', {
    name: journey.name, request_id: 'node-example-welcome-journey-v1',
  }, auth));
  console.log(`journey:  ${journey.name} published as version ${journey.published_version}`);

  // 3. The trigger: somebody signs up. Traits and properties are Structs: toStruct, never a
  //    plain object or snake_case Values (see the trap above).
  const userId = `user-${crypto.randomBytes(4).toString('hex')}`;
  const ingested = await call(identity, 'IngestEvents', {
    events: [{
      message_id: crypto.randomUUID(),
      type: 'EVENT_TYPE_TRACK',
      name: 'signed_up',
      identifiers: [{ type: 'user_id', value: userId }],
      traits: toStruct({ email: `${userId}@example.com`, first_name: 'Ada' }),
      properties: toStruct({ plan: 'pro' }),
      source: 'node-example',
    }],
  }, auth);
  const [result] = ingested.results;
  if (result.status && result.status.code) {
    console.error(`event rejected: ${result.status.message}`);
    return 1;
  }
  console.log(`event:    signed_up for profiles/${result.profile_id}`);

  // 4. The journey runs on its own: wait for the enrollment to complete and the email to be sent.
  const deadline = Date.now() + WAIT_SECONDS * 1000;
  let enrollment;
  let message;
  while (Date.now() < deadline && !(enrollment && message)) {
    const { enrollments } = await call(orchestration, 'ListEnrollments', {
      parent: journey.name, profile_id: result.profile_id,
    }, auth);
    enrollment = enrollments.find((e) => e.state === 'ENROLLMENT_STATE_COMPLETED');
    const { messages } = await call(delivery, 'ListMessages', {
      profile_id: result.profile_id,
    }, auth);
    message = messages.find((m) => m.status === 'MESSAGE_STATUS_SENT');
    if (!(enrollment && message)) await new Promise((resolve) => setTimeout(resolve, 200));
  }
  if (!enrollment || !message) {
    console.error(`no completed enrollment and sent email within ${WAIT_SECONDS} s`
      + ' (see the service logs)');
    return 1;
  }
  console.log(`enrolled: ${enrollment.name} ${enrollment.state}`);
  console.log(`message:  ${message.name} ${message.status} to ${message.recipient.address}`);
  console.log(`subject:  ${message.content.email.subject}`);

  // 5. A deliberately bad request: a journey whose send node names neither content nor channel.
  //    The answer is INVALID_ARGUMENT with every problem at once, one field violation each.
  try {
    await call(orchestration, 'CreateJourney', {
      journey: {
        display_name: 'Broken on purpose',
        event_trigger: { event_name: 'signed_up' },
        entry_node_id: 'send',
        nodes: [{ id: 'send', send: { next_node_id: 'done' } }, { id: 'done', exit: {} }],
      },
    }, auth);
    console.error('the bad journey was accepted');
    return 1;
  } catch (error) {
    const status = richStatus(error);
    if (!status) throw error;
    console.log(`error:    ${grpc.status[error.code]}: ${status.message}`);
    if (!printDetails(status.details)) return 1;
  }
  for (const stub of [identity, content, orchestration, delivery]) stub.close();
  return 0;
}

if (require.main === module) {
  main().then((code) => { process.exitCode = code; }, (error) => {
    console.error(error);
    process.exitCode = 1;
  });
}

module.exports = {
  toStruct, toValue, fromStruct, fromValue, richStatus, unpackDetails,
};
