"""The README is a front door: short, every document beside it linked, every link resolving."""
import pathlib
import re

import pytest

ROOT = pathlib.Path(__file__).resolve().parent.parent
README = ROOT / 'README.md'
DOCS = sorted((ROOT / 'docs').glob('*.md'))
PAGES = [README] + DOCS

# [text](target) and ![alt](target), the target up to a space or ')'; fenced and indented
# code is left out first, so a command's brackets are not read as links
LINK = re.compile(r'!?\[[^\]]*\]\(([^)\s]+)(?:\s+"[^"]*")?\)')
FENCE = re.compile(r'^```.*?^```', re.M | re.S)


def prose(text):
    text = FENCE.sub('', text)
    return '\n'.join(line for line in text.split('\n') if not line.startswith('    '))


def links(page):
    return LINK.findall(prose(page.read_text(encoding='utf-8')))


def slug(heading):
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces to '-'."""
    return re.sub(r'[^\w\- ]', '', heading.strip().lower()).replace(' ', '-')


def anchors(page):
    return {slug(h) for h in re.findall(r'^#+\s+(.*)$', prose(page.read_text(encoding='utf-8')),
                                          re.M)}


def test_readme_is_at_most_300_lines():
    assert len(README.read_text(encoding='utf-8').splitlines()) <= 300


def test_there_are_documents():
    assert DOCS, 'docs/ holds the detail the README links'


@pytest.mark.parametrize('page', PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_relative_link_resolves(page):
    broken = []
    for target in links(page):
        if re.match(r'[a-z]+:', target):        # https:, mailto:: not ours to check
            continue
        path, _, anchor = target.partition('#')
        file = (page.parent / path).resolve() if path else page
        if not file.exists():
            broken.append(target)
        elif anchor and file.suffix == '.md' and anchor not in anchors(file):
            broken.append(target)
    assert not broken, f'{page.name}: {broken}'


def test_every_document_is_linked_from_the_readme():
    linked = {(ROOT / t.partition('#')[0]).resolve() for t in links(README)}
    assert [d.name for d in DOCS if d.resolve() not in linked] == []


def test_slug_is_githubs():
    assert slug('Threads: what runs on more than one core') == 'threads-what-runs-on-more-than-one-core'
    assert slug("Ablations on several machines: `ablate --cluster`") == \
        'ablations-on-several-machines-ablate---cluster'
    assert slug("Tied lm_head × input rmsnorm, on names") == 'tied-lm_head--input-rmsnorm-on-names'
