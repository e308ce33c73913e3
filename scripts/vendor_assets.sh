#!/usr/bin/env bash
# Refresh the JavaScript the book serves itself (MathJax 3, RequireJS, the ipywidgets HTML manager)
# from the npm registry, at pinned versions, into book/_static/vendor/, with the licence files they
# need. The result is committed, so `make book` needs neither npm nor a network; run this only to
# upgrade a pin (tests/test_vendor.py checks the licence files are all there).
set -euo pipefail
MATHJAX=3.2.2
REQUIREJS=2.3.7
HTML_MANAGER=1.0.13   # @jupyter-widgets/html-manager 1.x matches ipywidgets 8.1
FONTAWESOME=5.15.4    # the @fortawesome/fontawesome-free that html-manager bundled (only its licence is used)
root=$(cd "$(dirname "$0")/.." && pwd)
vendor="$root/book/_static/vendor"
tmp=$(mktemp -d); trap 'rm -rf "$tmp"' EXIT
cd "$tmp"
npm pack --silent "mathjax@$MATHJAX" "requirejs@$REQUIREJS" "@jupyter-widgets/html-manager@$HTML_MANAGER" \
  "@fortawesome/fontawesome-free@$FONTAWESOME" >/dev/null
for f in *.tgz; do mkdir "${f%.tgz}"; tar xzf "$f" -C "${f%.tgz}"; done
rm -rf "$vendor"; mkdir -p "$vendor/mathjax/output/chtml/fonts" "$vendor/mathjax/input/tex" "$vendor/requirejs" "$vendor/html-manager"
mj="mathjax-$MATHJAX/package"
cp "$mj/LICENSE" "$mj/es5/tex-mml-chtml.js" "$vendor/mathjax/"
cp -r "$mj/es5/output/chtml/fonts/woff-v2" "$vendor/mathjax/output/chtml/fonts/"
# MathJax autoloads \cancel, \boldsymbol, ... from here; without them one macro leaves a page raw.
cp -r "$mj/es5/input/tex/extensions" "$vendor/mathjax/input/tex/"
# The copy a feedback page can carry inside it (python -m autograder inline-mathjax): every TeX extension
# and SVG glyphs, so it fetches nothing; gzipped (-n: the same bytes every time), unzipped by the page.
feedback_vendor="$root/autograder/vendor/mathjax-svg"
rm -rf "$feedback_vendor"; mkdir -p "$feedback_vendor"
gzip -9 -n -c "$mj/es5/tex-svg-full.js" > "$feedback_vendor/tex-svg-full.js.gz"
cp "$mj/LICENSE" "$feedback_vendor/"
cp "requirejs-$REQUIREJS/package/require.js" "$vendor/requirejs/"
hm="jupyter-widgets-html-manager-$HTML_MANAGER/package"
cp "$hm/LICENSE" "$hm/dist/embed-amd.js" "$vendor/html-manager/"
# Fonts the widget CSS points at (Font Awesome icons), resolved relative to embed-amd.js.
cp "$hm"/dist/*.woff2 "$hm"/dist/*.woff "$vendor/html-manager/" 

# Licences. RequireJS: the npm package ships no LICENSE file, only the notice at the top of require.js
# (MIT); write that notice out with the MIT terms it names.
notice=$(sed -n '2,3p' "$vendor/requirejs/require.js" | sed 's/^ \* //')
case "$notice" in *"RequireJS $REQUIREJS Copyright jQuery Foundation"*"Released under MIT license"*) ;;
  *) echo "unexpected require.js header: $notice" >&2; exit 1 ;; esac
cat > "$vendor/requirejs/LICENSE" <<TXT
The requirejs $REQUIREJS npm package includes no licence file; its require.js opens with:

$notice

so these are the MIT terms, with that copyright line (written by scripts/vendor_assets.sh):

Copyright jQuery Foundation and other contributors

Permission is hereby granted, free of charge, to any person obtaining a copy
of this software and associated documentation files (the "Software"), to deal
in the Software without restriction, including without limitation the rights
to use, copy, modify, merge, publish, distribute, sublicense, and/or sell
copies of the Software, and to permit persons to whom the Software is
furnished to do so, subject to the following conditions:

The above copyright notice and this permission notice shall be included in
all copies or substantial portions of the Software.

THE SOFTWARE IS PROVIDED "AS IS", WITHOUT WARRANTY OF ANY KIND, EXPRESS OR
IMPLIED, INCLUDING BUT NOT LIMITED TO THE WARRANTIES OF MERCHANTABILITY,
FITNESS FOR A PARTICULAR PURPOSE AND NONINFRINGEMENT. IN NO EVENT SHALL THE
AUTHORS OR COPYRIGHT HOLDERS BE LIABLE FOR ANY CLAIM, DAMAGES OR OTHER
LIABILITY, WHETHER IN AN ACTION OF CONTRACT, TORT OR OTHERWISE, ARISING FROM,
OUT OF OR IN CONNECTION WITH THE SOFTWARE OR THE USE OR OTHER DEALINGS IN
THE SOFTWARE.
TXT

# Font Awesome Free: the icon fonts above are its webfonts byte for byte, and embed-amd.js inlines its
# CSS. Its LICENSE.txt (fonts SIL OFL 1.1, code MIT, icons CC BY 4.0) names the OFL without its text,
# which the OFL requires to travel with the fonts, so add that too.
fa="fortawesome-fontawesome-free-$FONTAWESOME/package"
grep -q "Font Awesome Free $FONTAWESOME by @fontawesome" "$vendor/html-manager/embed-amd.js" \
  || { echo "embed-amd.js does not bundle Font Awesome Free $FONTAWESOME; update FONTAWESOME" >&2; exit 1; }
for font in "$vendor"/html-manager/*.woff "$vendor"/html-manager/*.woff2; do
  found=; for w in "$fa"/webfonts/*; do cmp -s "$font" "$w" && found=1; done
  [ -n "$found" ] || { echo "$font is not a Font Awesome Free $FONTAWESOME webfont" >&2; exit 1; }
done
mkdir -p "$vendor/html-manager/fontawesome-free"
cp "$fa/LICENSE.txt" "$vendor/html-manager/fontawesome-free/"
cat > "$vendor/html-manager/fontawesome-free/OFL-1.1.txt" <<'TXT'
The Font Awesome Free webfonts (../*.woff, ../*.woff2) are Copyright (c) Font Awesome
(https://fontawesome.com) and licensed under the SIL Open Font License, Version 1.1:

SIL OPEN FONT LICENSE

Version 1.1 - 26 February 2007

PREAMBLE

The goals of the Open Font License (OFL) are to stimulate worldwide development of collaborative font projects, to support the font creation efforts of academic and linguistic communities, and to provide a free and open framework in which fonts may be shared and improved in partnership with others.

The OFL allows the licensed fonts to be used, studied, modified and redistributed freely as long as they are not sold by themselves. The fonts, including any derivative works, can be bundled, embedded, redistributed and/or sold with any software provided that any reserved names are not used by derivative works. The fonts and derivatives, however, cannot be released under any other type of license. The requirement for fonts to remain under this license does not apply to any document created using the fonts or their derivatives.

DEFINITIONS

"Font Software" refers to the set of files released by the Copyright Holder(s) under this license and clearly marked as such. This may include source files, build scripts and documentation.

"Reserved Font Name" refers to any names specified as such after the copyright statement(s).

"Original Version" refers to the collection of Font Software components as distributed by the Copyright Holder(s).

"Modified Version" refers to any derivative made by adding to, deleting, or substituting — in part or in whole — any of the components of the Original Version, by changing formats or by porting the Font Software to a new environment.

"Author" refers to any designer, engineer, programmer, technical writer or other person who contributed to the Font Software.

PERMISSION & CONDITIONS

Permission is hereby granted, free of charge, to any person obtaining a copy of the Font Software, to use, study, copy, merge, embed, modify, redistribute, and sell modified and unmodified copies of the Font Software, subject to the following conditions:

1) Neither the Font Software nor any of its individual components, in Original or Modified Versions, may be sold by itself.

2) Original or Modified Versions of the Font Software may be bundled, redistributed and/or sold with any software, provided that each copy contains the above copyright notice and this license. These can be included either as stand-alone text files, human-readable headers or in the appropriate machine-readable metadata fields within text or binary files as long as those fields can be easily viewed by the user.

3) No Modified Version of the Font Software may use the Reserved Font Name(s) unless explicit written permission is granted by the corresponding Copyright Holder. This restriction only applies to the primary font name as presented to the users.

4) The name(s) of the Copyright Holder(s) or the Author(s) of the Font Software shall not be used to promote, endorse or advertise any Modified Version, except to acknowledge the contribution(s) of the Copyright Holder(s) and the Author(s) or with their explicit written permission.

5) The Font Software, modified or unmodified, in part or in whole, must be distributed entirely under this license, and must not be distributed under any other license. The requirement for fonts to remain under this license does not apply to any document created using the Font Software.

TERMINATION

This license becomes null and void if any of the above conditions are not met.

DISCLAIMER

THE FONT SOFTWARE IS PROVIDED "AS IS", WITHOUT WARRANTY OF ANY KIND, EXPRESS OR IMPLIED, INCLUDING BUT NOT LIMITED TO ANY WARRANTIES OF MERCHANTABILITY, FITNESS FOR A PARTICULAR PURPOSE AND NONINFRINGEMENT OF COPYRIGHT, PATENT, TRADEMARK, OR OTHER RIGHT. IN NO EVENT SHALL THE COPYRIGHT HOLDER BE LIABLE FOR ANY CLAIM, DAMAGES OR OTHER LIABILITY, INCLUDING ANY GENERAL, SPECIAL, INDIRECT, INCIDENTAL, OR CONSEQUENTIAL DAMAGES, WHETHER IN AN ACTION OF CONTRACT, TORT OR OTHERWISE, ARISING FROM, OUT OF THE USE OR INABILITY TO USE THE FONT SOFTWARE OR FROM OTHER DEALINGS IN THE FONT SOFTWARE.
TXT

# embed-amd.js is six webpack bundles joined together, each opening with
# "/*! For license information please see <bundle>.LICENSE.txt */"; upstream deletes dist/amd/, where
# those files were written, before publishing. Rebuild each from dist/embed.js.LICENSE.txt, the
# notices extracted from the same sources bundled the non-AMD way: a bundle gets (in terser's sorted
# order) the notices of the libraries whose code it contains, told by one sign of each in minified code.
node - "$vendor/html-manager/embed-amd.js" "$hm/dist/embed.js.LICENSE.txt" "$HTML_MANAGER" <<'JS'
const fs = require('fs'), path = require('path');
const [bundle, noticeFile, version] = process.argv.slice(2);
const code = fs.readFileSync(bundle, 'utf8');
const notices = fs.readFileSync(noticeFile, 'utf8').trim().split(/\n\n(?=\/\*)/);
const signs = [  // [text in the notice, sign of that library in a bundle]
  ['is-plain-object', /hasOwnProperty\("isPrototypeOf"\)/],
  ['jQuery JavaScript Library', /\.fn\.init\(/],
  ['jQuery UI Keycode', /\.keyCode=\{BACKSPACE:8,/],
  ['jQuery UI Mouse', /\.widget\("ui\.mouse"/],
  ['jQuery UI Slider', /\.widget\("ui\.slider"/],
  ['jQuery UI Widget', /\.widget\.bridge=function/],
  // tslib's __extends is a named function; the helper TypeScript emits inline is anonymous.
  ['Copyright (c) Microsoft Corporation', /\)\};function [\w$]+\([\w$]+,[\w$]+\)\{if\("function"!=typeof [\w$]+&&null!==[\w$]+\)throw new TypeError\("Class extends value "/],
  ['URI.js', /URI can not be parsed/],
];
const banner = /\/\*! For license information please see (\S+) \*\//g;
const starts = [...code.matchAll(banner)];
if (!starts.length) throw new Error('no licence banners in ' + bundle);
const used = new Set();
starts.forEach((m, i) => {
  const chunk = code.slice(m.index, i + 1 < starts.length ? starts[i + 1].index : code.length);
  const mine = notices.filter((n) => {
    const sign = signs.find(([text]) => n.includes(text));
    if (!sign) throw new Error('no sign known for the notice:\n' + n);
    return sign[1].test(chunk);
  });
  if (!mine.length) throw new Error('no notice found for ' + m[1]);
  mine.forEach((n) => used.add(n));
  const name = m[1], js = name.replace(/\.LICENSE\.txt$/, '');
  const head = `/* Licence notices of the third-party code in the ${js} bundle at the top of embed-amd.js\n` +
    ` * (@jupyter-widgets/html-manager ${version}, published without this file; rebuilt from its\n` +
    ` * dist/embed.js.LICENSE.txt by scripts/vendor_assets.sh). The rest is under ./LICENSE. */\n\n`;
  fs.writeFileSync(path.join(path.dirname(bundle), name), head + mine.join('\n\n') + '\n');
  console.log(name + ': ' + mine.map((n) => signs.find(([t]) => n.includes(t))[0]).join(', '));
});
const unused = notices.filter((n) => !used.has(n));
if (unused.length) throw new Error('notices matched by no bundle:\n' + unused.join('\n\n'));
JS

# Every "see X.LICENSE.txt" must resolve, and every component folder needs a LICENSE.
while IFS= read -r js; do
  for ref in $(grep -oE 'For license information please see [^ ]+' "$js" | awk '{print $NF}' | sort -u); do
    [ -f "$(dirname "$js")/$ref" ] || { echo "missing $(dirname "$js")/$ref" >&2; exit 1; }
  done
done < <(grep -rlE 'For license information please see' "$vendor" --include='*.js')
for d in "$vendor"/*/; do compgen -G "${d}LICENSE*" >/dev/null || { echo "no LICENSE in $d" >&2; exit 1; }; done

bundles=$(cd "$vendor/html-manager" && ls ./*.js.LICENSE.txt | sed 's|^\./|`html-manager/|; s|$|`|' | paste -sd, | sed 's/,/, /g')
cat > "$vendor/README.md" <<TXT
# Vendored JavaScript (served by the book itself, so pages work offline)

Generated by \`scripts/vendor_assets.sh\`; do not edit by hand.

| component | version | licence | licence file(s) | used for |
|---|---|---|---|---|
| mathjax | $MATHJAX | Apache-2.0 (code and its fonts) | \`mathjax/LICENSE\` | typesetting math (\`mathjax_path\`) |
| requirejs | $REQUIREJS | MIT | \`requirejs/LICENSE\` (the npm package has none: written from the header notice of \`require.js\`) | module loader for the widget manager |
| @jupyter-widgets/html-manager | $HTML_MANAGER | BSD-3-Clause | \`html-manager/LICENSE\` | rendering saved ipywidgets state (\`nb_ipywidgets_js\`) |
| third-party code bundled in \`html-manager/embed-amd.js\` (jQuery, jQuery UI, tslib, URI.js, is-plain-object) | as bundled | MIT, 0BSD, BSD-2-Clause | $bundles (the files its \`/*! For license information please see … */\` banners name; upstream publishes none, so rebuilt from \`dist/embed.js.LICENSE.txt\`) | — |
| @fortawesome/fontawesome-free | $FONTAWESOME | fonts SIL OFL 1.1, CSS (inlined in \`embed-amd.js\`) MIT, icons CC BY 4.0 | \`html-manager/fontawesome-free/LICENSE.txt\`, \`html-manager/fontawesome-free/OFL-1.1.txt\` | icon fonts \`html-manager/*.woff\`, \`*.woff2\` |

The other bundled libraries (Backbone, Underscore, Lodash, Lumino, d3, ajv, sanitize-html, …) carry no
licence comment, so upstream lists them in no \`*.LICENSE.txt\`; see \`html-manager/LICENSE\` and their projects.
TXT
echo "vendored into $vendor"; du -sh "$vendor"
