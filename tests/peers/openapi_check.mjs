// openapi_check.mjs — validates OpenAPI 3.1 documents with third-party validators.
//
//   node tests/peers/openapi_check.mjs FILE...
//
// Each FILE (a JSON document) must pass:
//  1. @apidevtools/swagger-parser's validate(): the OpenAPI 3.1 schema (the OAS JSON
//     Schema of the spec's authors, through ajv) and the resolution of every $ref;
//  2. ajv's JSON Schema 2020-12 meta-schema, for every schema in the document (the OAS
//     schema leaves a Schema Object's content to the dialect, which swagger-parser does
//     not check: `{"type": "strin"}` passes it);
//  3. what the OAS schema cannot say and swagger-parser checks only for Swagger 2.0:
//     operationIds unique (OAS 3.1 §4.8.10.1), each path template's names declared once
//     as required path parameters of each of its operations and no path parameter that
//     the template lacks (§4.8.12.1), parameters unique by name and location, and no two
//     paths that differ only by template names (§4.8.8).
// Prints "openapi_check: ok FILE" for each; on the first failure prints one line,
// "openapi_check: FILE: reason", on stderr and exits 1.
import { createRequire } from 'node:module';
import fs from 'node:fs';

const require = createRequire(import.meta.url);
const SwaggerParser = require('@apidevtools/swagger-parser');
const Ajv2020 = require('ajv/dist/2020').default;

const METHODS = ['get', 'put', 'post', 'delete', 'options', 'head', 'patch', 'trace'];

function fail(file, reason) {
    process.stderr.write(`openapi_check: ${file}: ${reason}\n`);
    process.exit(1);
}

// Every Schema Object of the document, with where it stands.
function* schemas(doc) {
    for (const [name, s] of Object.entries(doc.components?.schemas ?? {}))
        yield [`components.schemas.${name}`, s];
    for (const [path, item] of Object.entries(doc.paths ?? {})) {
        for (const m of METHODS) {
            const op = item[m];
            if (!op) continue;
            for (const p of op.parameters ?? [])
                yield [`${m} ${path} parameter ${p.name}`, p.schema];
            for (const [type, media] of Object.entries(op.requestBody?.content ?? {}))
                yield [`${m} ${path} requestBody ${type}`, media.schema];
            for (const [status, r] of Object.entries(op.responses ?? {}))
                for (const [type, media] of Object.entries(r.content ?? {}))
                    yield [`${m} ${path} response ${status} ${type}`, media.schema];
        }
    }
}

function checkSemantics(file, doc) {
    if (doc.openapi !== '3.1.0') fail(file, `openapi is ${JSON.stringify(doc.openapi)}, not "3.1.0"`);
    const ajv = new Ajv2020({ strict: false, validateFormats: false });
    for (const [where, s] of schemas(doc)) {
        if (s === undefined) fail(file, `${where}: no schema`);
        if (!ajv.validateSchema(s))
            fail(file, `${where}: not a JSON Schema 2020-12: ${ajv.errorsText(ajv.errors)}`);
    }
    const ids = new Set();
    const shapes = new Map();
    for (const [path, item] of Object.entries(doc.paths ?? {})) {
        const names = [...path.matchAll(/\{([^}]*)\}/g)].map((m) => m[1]);
        if (new Set(names).size !== names.length) fail(file, `${path}: a template name twice`);
        const shape = path.replace(/\{[^}]*\}/g, '{}');
        if (shapes.has(shape))
            fail(file, `${path} and ${shapes.get(shape)} differ only by template names`);
        shapes.set(shape, path);
        for (const m of METHODS) {
            const op = item[m];
            if (!op) continue;
            if (op.operationId !== undefined) {
                if (ids.has(op.operationId)) fail(file, `operationId ${op.operationId} twice`);
                ids.add(op.operationId);
            }
            const seen = new Set();
            for (const p of op.parameters ?? []) {
                const key = `${p.in}:${p.name}`;
                if (seen.has(key)) fail(file, `${m} ${path}: parameter ${key} twice`);
                seen.add(key);
                if (p.in === 'path') {
                    if (!names.includes(p.name))
                        fail(file, `${m} ${path}: path parameter ${p.name} is not in the template`);
                    if (p.required !== true)
                        fail(file, `${m} ${path}: path parameter ${p.name} is not required`);
                }
            }
            for (const n of names)
                if (!seen.has(`path:${n}`)) fail(file, `${m} ${path}: {${n}} is not declared`);
        }
    }
}

for (const file of process.argv.slice(2)) {
    let doc;
    try {
        doc = JSON.parse(fs.readFileSync(file, 'utf8'));
    } catch (e) {
        fail(file, `not JSON: ${e.message}`);
    }
    try {
        // validate() dereferences the object it is given: hand it a copy
        await SwaggerParser.validate(structuredClone(doc));
    } catch (e) {
        fail(file, `swagger-parser: ${String(e.message).split('\n').slice(0, 3).join(' | ')}`);
    }
    checkSemantics(file, doc);
    process.stdout.write(`openapi_check: ok ${file}\n`);
}
if (process.argv.length < 3) fail('-', 'usage: node openapi_check.mjs FILE...');
