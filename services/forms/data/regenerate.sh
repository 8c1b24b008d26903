#!/usr/bin/env bash
# Regenerates the reference CSVs of this folder from Etalab's npm package
# @etalab/decoupage-administratif (INSEE Code officiel géographique; code MIT, data Licence Ouverte).
#
#   services/forms/data/regenerate.sh            # the pinned version below
#   DECOUPAGE_VERSION=4.1.0 services/forms/data/regenerate.sh   # another millésime (4.1.0 = COG 2024)
#   OUT_DIR=/tmp/x services/forms/data/regenerate.sh            # write elsewhere (to compare)
#
# Needs node and npm (npm registry only). Writes, UTF-8, LF, sorted by code, quoted only when needed:
#   regions.csv       code,nom                         the 18 régions (13 metropolitan + 5 DROM)
#   departements.csv  code,nom,region                  the 101 départements
#   communes.csv      code,nom,departement,region      the communes of type "commune-actuelle" of those
#   cpam.csv          libelle,nom,departement          the caisses (CPAM/CGSS/CSSM) offered by the forms
#   manifest.txt      package, version, integrity, date, counts and SHA-256 of the files above
# The collectivités d'outre-mer (975, 977, 978, 984, 986–989) are left out, and so are the communes
# déléguées / associées and the arrondissements municipaux of Paris, Lyon and Marseille (see README.md).
set -euo pipefail

VERSION="${DECOUPAGE_VERSION:-6.0.0}"
PACKAGE="@etalab/decoupage-administratif"
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
OUT_DIR="${OUT_DIR:-$HERE}"

command -v node >/dev/null || { echo "regenerate.sh: node is required" >&2; exit 1; }
command -v npm >/dev/null || { echo "regenerate.sh: npm is required" >&2; exit 1; }

WORK="$(mktemp -d)"
trap 'rm -rf "$WORK"' EXIT

echo "installing $PACKAGE@$VERSION into $WORK" >&2
(
  cd "$WORK"
  npm init -y >/dev/null
  npm install --no-audit --no-fund --ignore-scripts --save-exact "$PACKAGE@$VERSION" >&2
)
PKG_DIR="$WORK/node_modules/$PACKAGE"
INTEGRITY="$(cd "$WORK" && node -e '
  const lock = require("./package-lock.json");
  const p = lock.packages["node_modules/" + process.argv[1]];
  process.stdout.write(p && p.integrity ? p.integrity : "unknown");
' "$PACKAGE")"

mkdir -p "$OUT_DIR"
PKG_DIR="$PKG_DIR" OUT_DIR="$OUT_DIR" VERSION="$VERSION" PACKAGE="$PACKAGE" INTEGRITY="$INTEGRITY" node <<'JS'
'use strict'
const fs = require('fs')
const path = require('path')
const crypto = require('crypto')

const {PKG_DIR, OUT_DIR, VERSION, PACKAGE, INTEGRITY} = process.env
const load = name => JSON.parse(fs.readFileSync(path.join(PKG_DIR, 'data', name), 'utf8'))

function fail(message) {
  console.error('regenerate.sh: ' + message)
  process.exit(1)
}

// RFC 4180: quote a field only when it holds a comma, a quote or a line break.
const cell = value => {
  const s = String(value)
  return /[",\r\n]/.test(s) ? '"' + s.replace(/"/g, '""') + '"' : s
}
const byCode = (a, b) => (a.code < b.code ? -1 : a.code > b.code ? 1 : 0)
const written = []
function write(name, header, rows) {
  const text = [header.join(','), ...rows.map(r => r.map(cell).join(','))].join('\n') + '\n'
  fs.writeFileSync(path.join(OUT_DIR, name), text, 'utf8')
  const sha = crypto.createHash('sha256').update(text, 'utf8').digest('hex')
  written.push({name, rows: rows.length, sha})
}

// Régions and départements: metropolitan France and the five DROM. The package also lists the
// collectivités d'outre-mer (zone "com") as pseudo-régions/départements; INSEE's lists of the 18
// régions and 101 départements, and the Assurance Maladie's caisses, do not include them.
const inScope = x => x.zone === 'metro' || x.zone === 'drom'
const regions = load('regions.json').filter(inScope).sort(byCode)
const departements = load('departements.json').filter(inScope).sort(byCode)
const regionCodes = new Set(regions.map(r => r.code))
const regionOfDep = new Map(departements.map(d => [d.code, d.region]))

const communes = load('communes.json')
  .filter(c => c.type === 'commune-actuelle' && regionOfDep.has(c.departement))
  .sort(byCode)

// Consistency checks: a failure means the package changed shape; look before committing.
const unique = (list, what) => {
  const seen = new Set()
  for (const x of list) {
    if (seen.has(x.code)) fail(`duplicate ${what} code ${x.code}`)
    seen.add(x.code)
  }
}
unique(regions, 'région'); unique(departements, 'département'); unique(communes, 'commune')
for (const d of departements) {
  if (!regionCodes.has(d.region)) fail(`département ${d.code} in unknown région ${d.region}`)
  if (!/^([0-9]{2}|2[AB]|97[1-6])$/.test(d.code)) fail(`unexpected département code ${d.code}`)
}
for (const c of communes) {
  if (!/^[0-9][0-9AB][0-9]{3}$/.test(c.code)) fail(`unexpected commune code ${c.code}`)
  if (regionOfDep.get(c.departement) !== c.region) fail(`commune ${c.code}: région ${c.region} is not that of département ${c.departement}`)
  if (!c.code.startsWith(c.departement)) fail(`commune ${c.code} does not start with its département ${c.departement}`)
  if (!c.nom) fail(`commune ${c.code} has no name`)
}
if (regions.length !== 18) fail(`expected 18 régions, got ${regions.length}`)
if (departements.length !== 101) fail(`expected 101 départements, got ${departements.length}`)
if (communes.length < 34000) fail(`expected more than 34 000 communes, got ${communes.length}`)

// Caisses offered by the CPAM drop-down of the forms: one CPAM per metropolitan département, named
// from the département's INSEE "type de nom en clair" (TNCC, `typeLiaison` in the package), except
// where a département has several caisses, and the DROM's caisses générales (CGSS) and Mayotte's
// caisse de sécurité sociale (CSSM). The exceptions come from the project's proposal
// (shared/data/cpam.csv, marked "to verify"); the names follow the Assurance Maladie's usage.
const SEVERAL = {
  '59': ['CPAM de Lille-Douai', 'CPAM de Roubaix-Tourcoing', 'CPAM des Flandres', 'CPAM du Hainaut'],
  '62': ["CPAM de l'Artois", "CPAM de la Côte d'Opale"],
  '64': ['CPAM de Bayonne', 'CPAM de Béarn et Soule'],
}
const OTHER_ORGANISMS = {
  '971': 'CGSS', '972': 'CGSS', '973': 'CGSS', '974': 'CGSS',
  '976': 'Caisse de sécurité sociale',
}
// TNCC → the French preposition + article before the name ("de l'Ain", "du Calvados", ...).
const LIAISON = {0: 'de ', 1: "d'", 2: 'du ', 3: 'de la ', 4: 'des ', 5: "de l'", 6: 'des ', 7: 'de las ', 8: 'de los '}
const withoutArticle = (nom, tncc) => {
  const drop = {2: /^Le /, 3: /^La /, 4: /^Les /, 5: /^L'/, 6: /^Aux /, 7: /^Las /, 8: /^Los /}[tncc]
  return drop ? nom.replace(drop, '') : nom
}
const cpams = []
for (const d of departements) {
  const names = SEVERAL[d.code] ||
    [`${OTHER_ORGANISMS[d.code] || 'CPAM'} ${LIAISON[d.typeLiaison] ?? fail(`TNCC ${d.typeLiaison} of ${d.code}`)}${withoutArticle(d.nom, d.typeLiaison)}`]
  for (const nom of names) cpams.push([`${nom} (${d.code})`, nom, d.code])
}
if (new Set(cpams.map(c => c[0])).size !== cpams.length) fail('duplicate CPAM label')

write('regions.csv', ['code', 'nom'], regions.map(r => [r.code, r.nom]))
write('departements.csv', ['code', 'nom', 'region'], departements.map(d => [d.code, d.nom, d.region]))
write('communes.csv', ['code', 'nom', 'departement', 'region'], communes.map(c => [c.code, c.nom, c.departement, c.region]))
write('cpam.csv', ['libelle', 'nom', 'departement'], cpams)

const manifest = [
  `source: npm ${PACKAGE}@${VERSION} (INSEE Code officiel géographique; code MIT, data Licence Ouverte / Etalab)`,
  `integrity: ${INTEGRITY}`,
  `generated: ${new Date().toISOString().slice(0, 10)} by services/forms/data/regenerate.sh`,
  ...written.map(w => `${w.name}: ${w.rows} rows, sha256 ${w.sha}`),
].join('\n') + '\n'
fs.writeFileSync(path.join(OUT_DIR, 'manifest.txt'), manifest, 'utf8')
process.stderr.write(manifest)
JS
