// node-opcua server with a few changing variables. Usage: node server.js PORT
// Prints one JSON line {"ready": true, "namespaceUri": ..., "endpoint": ...} once listening.
"use strict";
const { OPCUAServer } = require("node-opcua-server");
const { Variant, DataType } = require("node-opcua-variant");
const { nodesets } = require("node-opcua-nodesets");

const port = parseInt(process.argv[2], 10);

async function main() {
  const server = new OPCUAServer({
    port,
    host: "127.0.0.1",
    hostname: "127.0.0.1",
    nodeset_filename: [nodesets.standard],
    serverInfo: { applicationUri: "urn:plantbridge:node-peer", productUri: "node-peer" },
    buildInfo: { productName: "plantbridge-node-peer" },
  });
  await server.initialize();
  const addressSpace = server.engine.addressSpace;
  const ns = addressSpace.getOwnNamespace();
  const peer = ns.addObject({ organizedBy: addressSpace.rootFolder.objects, browseName: "Peer" });

  const double = (name) => ns.addVariable({
    componentOf: peer, browseName: name, nodeId: `s=peer.${name}`, dataType: "Double",
    minimumSamplingInterval: 50, value: new Variant({ dataType: DataType.Double, value: 0 }),
  });
  const temperature = double("temperature");
  const vibration = double("vibration");
  // Ramps by 1 every 50 ms over an EU range of 0..1000: for deadband tests.
  const ramp = ns.addAnalogDataItem({
    componentOf: peer, browseName: "ramp", nodeId: "s=peer.ramp", dataType: "Double",
    minimumSamplingInterval: 50, engineeringUnitsRange: { low: 0, high: 1000 },
    value: new Variant({ dataType: DataType.Double, value: 0 }),
  });
  const running = ns.addVariable({
    componentOf: peer, browseName: "running", nodeId: "s=peer.running", dataType: "Boolean",
    minimumSamplingInterval: 50, value: new Variant({ dataType: DataType.Boolean, value: true }),
  });

  let t = 0;
  setInterval(() => {
    t += 1;
    const set = (node, value) => node.setValueFromSource(
      new Variant({ dataType: DataType.Double, value }));
    set(temperature, 45 + Math.sin(t / 10));
    set(vibration, 2.5 + 0.2 * Math.sin(t / 7));
    set(ramp, t % 1000);
  }, 50);
  void running;

  await server.start();
  process.stdout.write(JSON.stringify({
    ready: true, namespaceUri: ns.namespaceUri, endpoint: server.getEndpointUrl(),
  }) + "\n");
  const stop = async () => { await server.shutdown(0); process.exit(0); };
  process.on("SIGTERM", stop);
  process.on("SIGINT", stop);
}

main().catch((err) => { console.error(err); process.exit(1); });
