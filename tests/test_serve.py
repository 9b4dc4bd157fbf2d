"""The browser app (experiments.serve), driven in a real headless Chromium.

The server runs as a user starts it (``python -m experiments.serve``, the
shipped model, a free local port) and the page is used through the
browser: pages and recordings are uploaded through its file inputs, buttons
clicked, a box drawn with the mouse.  Needs Debian's ``chromium`` and
``chromium-driver`` and the ``selenium`` package (``experiments/
install.sh``).  With ``DCCAFLAX_SCREENSHOTS=DIR`` the walk-through saves its
screenshots there (the README's).
"""

import json
import os
import re
import shutil
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request

import pytest

_INSTALL = ('bash experiments/install.sh installs them (apt-get install '
            "chromium chromium-driver; pip install -e '.[test,demo]')")
try:
  from selenium import webdriver
  from selenium.common.exceptions import TimeoutException
  from selenium.webdriver.chrome.service import Service
  from selenium.webdriver.common.action_chains import ActionChains
  from selenium.webdriver.common.by import By
  from selenium.webdriver.support.ui import Select
  from selenium.webdriver.support.ui import WebDriverWait
except ImportError as e:
  pytest.fail(f'the browser tests need selenium ({e}): {_INSTALL}',
              pytrace=False)

PAGES = 3              # the first test pieces' pages, uploaded
MAX_UPLOAD_MB = 5
OTHER_MODEL = 'studies/width/w025'     # a model that is not the served one
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
WAIT_S = 240           # the slowest step: loading the model beside a busy CPU


def _start(args, **kw):
  env = dict(os.environ, PYTHONUNBUFFERED='1')
  env['PYTHONPATH'] = ROOT + os.pathsep + env.get('PYTHONPATH', '')
  return subprocess.Popen([sys.executable, '-m', *map(str, args)], cwd=ROOT,
                          env=env, text=True, **kw)


@pytest.fixture(scope='module')
def pages(tmp_path_factory, real_midi):
  """Titled LilyPond pages of the first ``PAGES`` test pieces (PNG; the
  last one as a PDF); and a page index of the first one made by another
  model."""
  import dccaflax  # pylint: disable=g-import-not-at-top
  from data_prep import melody  # pylint: disable=g-import-not-at-top
  from data_prep.engraving import lilypond  # pylint: disable=g-import-not-at-top
  from dccaflax import index as index_lib  # pylint: disable=g-import-not-at-top
  from dccaflax import page_index  # pylint: disable=g-import-not-at-top
  from PIL import Image  # pylint: disable=g-import-not-at-top
  root = tmp_path_factory.mktemp('serve_pages')
  folder = root / 'pages'
  folder.mkdir()
  paths = []
  for midi in sorted((real_midi / 'test').glob('*.mid'))[:PAGES]:
    mel = melody.read_melody(str(midi))
    paths.append(folder / f'{mel.name}.png')
    lilypond.page_png(mel, str(paths[-1]), title=mel.name)
  other = page_index.build(dccaflax.load(os.path.join(ROOT, OTHER_MODEL)),
                           paths[:1])
  index_lib.save(other, root / 'other_model.npz')
  # The last page as a one-page PDF, as a scan or an engraver gives it.
  pdf = paths[-1].with_suffix('.pdf')
  with Image.open(paths[-1]) as im:
    im.convert('RGB').save(pdf, resolution=200.0)
  paths[-1].unlink()
  paths[-1] = pdf
  return {'paths': paths, 'other_index': root / 'other_model.npz'}


@pytest.fixture(scope='module')
def server(tmp_path_factory):
  """``experiments.serve`` with the shipped model on a free port: its URL."""
  cache = tmp_path_factory.mktemp('serve_cache')
  proc = _start(['experiments.serve', '--port', 0, '--cache_dir', cache,
                 '--max_upload_mb', MAX_UPLOAD_MB, '--pieces', PAGES],
                stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
  lines, m = [], None
  deadline = time.time() + WAIT_S
  while not m and time.time() < deadline:
    line = proc.stdout.readline()
    if not line:                        # it exited
      break
    lines.append(line)
    m = re.search(r'serving .* at (http://\S+/)', line)
  if not m:
    proc.kill()
    pytest.fail('the server did not start:\n' + ''.join(lines[-40:]))
  # keep its log flowing (a full pipe would block it)
  threading.Thread(target=lambda: [None for _ in proc.stdout],
                   daemon=True).start()
  yield m.group(1)
  proc.terminate()
  proc.wait(timeout=30)


@pytest.fixture(scope='module')
def browser():
  """Headless Chromium (Debian's) through its chromedriver.

  The driver's path is given, so Selenium Manager is not run and nothing is
  downloaded.
  """
  binary, driver = shutil.which('chromium'), shutil.which('chromedriver')
  if not (binary and driver):
    pytest.fail('the browser tests need chromium and chromedriver on PATH '
                f'(found: {binary}, {driver}): {_INSTALL}', pytrace=False)
  options = webdriver.ChromeOptions()
  options.binary_location = binary
  for arg in ('--headless=new', '--no-sandbox', '--disable-dev-shm-usage',
              '--window-size=1280,900', '--autoplay-policy='
              'no-user-gesture-required', '--mute-audio'):
    options.add_argument(arg)
  chrome = webdriver.Chrome(service=Service(driver), options=options)
  yield chrome
  chrome.quit()


def _wait(chrome, condition, what, timeout=WAIT_S):
  """Waits for ``condition(chrome)``; fails with the page's error line."""
  try:
    return WebDriverWait(chrome, timeout, 0.2).until(condition)
  except TimeoutException:
    pytest.fail(f'{what}: not seen; the page says: '
                f'{_text(chrome, "error")!r} / {_text(chrome, "progress")!r}')


def _text(chrome, element_id):
  return chrome.find_element(By.ID, element_id).text


def _css(chrome, selector):
  return chrome.find_elements(By.CSS_SELECTOR, selector)


def _open(chrome, url):
  chrome.get(url)
  _wait(chrome, lambda c: c.execute_script(
      'return document.body.dataset.ready') == 'yes', 'the model loaded')


def _upload(chrome, input_id, *paths):
  chrome.find_element(By.ID, input_id).send_keys(
      '\n'.join(str(p) for p in paths))


def _error_after(chrome, action, what):
  """Runs ``action`` and returns the message it puts on the page."""
  chrome.execute_script("document.getElementById('error').hidden = true;")
  action()
  _wait(chrome, lambda c: _css(c, '#error')[0].is_displayed(), what)
  text = _text(chrome, 'error')
  assert 'Traceback' not in chrome.page_source
  return text


def _shot(chrome, name, scroll_to=None):
  """With $DCCAFLAX_SCREENSHOTS, the whole page as PNG there (a window as
  tall as the page, scrolled to the element with id ``scroll_to``)."""
  folder = os.environ.get('DCCAFLAX_SCREENSHOTS')
  if not folder:
    return
  size = chrome.get_window_size()
  height = chrome.execute_script('return document.body.scrollHeight')
  chrome.set_window_size(size['width'], min(height + 150, 2600))
  chrome.execute_script(
      f"document.getElementById('{scroll_to}').scrollIntoView()" if scroll_to
      else 'window.scrollTo(0, 0)')
  time.sleep(0.5)                                  # smooth scrolling ends
  chrome.save_screenshot(os.path.join(folder, name))
  chrome.set_window_size(size['width'], size['height'])


def test_a_recording_is_found_on_its_page(server, browser, pages,
                                          recordings):
  """Upload the pages and a rendering of the first piece: its page is
  named, the place is highlighted there (and follows the recording), the
  excerpt's top snippets are drawn, a box finds the audio, and a bundled
  piece rendered on the fly is found on its own page."""
  chrome = browser
  _open(chrome, server)
  _upload(chrome, 'page-files', *pages['paths'])
  _css(chrome, '#index-pages')[0].click()
  _wait(chrome, lambda c: f'Searching {PAGES} page(s)' in _text(
      c, 'collection'), 'the pages indexed')
  names = [f.get_attribute('data-name') for f in _css(chrome, 'figure.page')]
  assert names == [p.name for p in pages['paths'][:-1]] + [
      pages['paths'][-1].stem + '_p1.png']            # the PDF's page 1
  # The recording: the pipeline's rendering of the first piece.
  _upload(chrome, 'audio-file', recordings['wav'])
  _wait(chrome, lambda c: _text(c, 'identified'), 'an identification')
  page = recordings['name'] + '.png'
  assert _text(chrome, 'identified') == page
  mine = f'figure.page[data-name="{page}"]'
  follow = _css(chrome, f'{mine} rect.follow')
  assert len(follow) == 1 and len(_css(chrome, 'rect.follow')) == 1
  size = next(p for p in chrome.execute_script(
      'return state.pages') if p['name'] == page)
  y = float(follow[0].get_attribute('y'))
  assert 0 < y < size['height']
  # The highlight follows the recording (the identify timeline).
  first = follow[0].get_attribute('x'), follow[0].get_attribute('y')
  chrome.execute_script('follow(ident.timeline[ident.timeline.length - 1]'
                        '.t)')
  last = _css(chrome, f'{mine} rect.follow')[0]
  assert (last.get_attribute('x'), last.get_attribute('y')) != first
  _shot(chrome, 'serve_identified.png')
  # Figure 3 of one excerpt: the figure, and its top 10 boxed on the pages.
  _css(chrome, '#excerpt')[0].click()
  _wait(chrome, lambda c: c.execute_script(
      "const i = document.querySelector('#figure img');"
      'return i && i.complete && i.naturalWidth > 0;'), 'the figure')
  assert len(_css(chrome, 'rect.hit')) == 10
  assert len(_css(chrome, f'{mine} rect.hit')) >= 5
  _shot(chrome, 'serve_figure3.png', 'result')
  # A box drawn around the highlighted place (the last window's) finds
  # the recording there.
  last_t = chrome.execute_script(
      'return ident.timeline[ident.timeline.length - 1].t')
  target = _css(chrome, f'{mine} rect.follow')[0]
  chrome.execute_script("arguments[0].scrollIntoView({block: 'center'})",
                        target)
  ActionChains(chrome).move_to_element_with_offset(target, -40, -10) \
      .click_and_hold().move_by_offset(80, 20).release().perform()
  _wait(chrome, lambda c: len(_css(c, '#box-list li')) == 10,
        'the box\'s audio excerpts')
  _wait(chrome, lambda c: all(i.get_attribute('naturalWidth') != '0'
                              for i in _css(c, '#box-list img')),
        'the excerpts\' spectrograms')
  best = _css(chrome, '#box-list li')[0].text
  found = re.search(r'fluidr3\.wav at ([\d.]+) s', best)
  assert found and abs(float(found.group(1)) - last_t) <= 3.2, (best, last_t)
  _shot(chrome, 'serve_box.png', 'box-results')
  # A bundled test piece rendered on the fly (the second), in FluidR3.
  second = os.path.basename(pages['paths'][1])
  Select(_css(chrome, '#piece')[0]).select_by_value(second[:-4])
  Select(_css(chrome, '#soundfont')[0]).select_by_value('fluidr3')
  _css(chrome, '#render')[0].click()
  _wait(chrome, lambda c: _text(c, 'identified') == second,
        'the rendered piece identified')
  assert len(_css(chrome, f'figure.page[data-name="{second}"] rect.follow')
             ) == 1


def test_bad_input_is_a_message_on_the_page(server, browser, pages,
                                            recordings, tmp_path):
  """Unreadable and silent recordings, a page without staves, another
  model's index, a file over the limit: messages naming the file and why.
  Then the bundled test pieces' pages, engraved on the fly."""
  from PIL import Image  # pylint: disable=g-import-not-at-top
  import numpy as np  # pylint: disable=g-import-not-at-top
  chrome = browser
  _open(chrome, server)
  text = _error_after(chrome, lambda: _upload(
      chrome, 'audio-file', recordings['garbage']), 'unreadable audio')
  assert text.startswith('garbage.wav: cannot read audio'), text
  _shot(chrome, 'serve_error.png')
  text = _error_after(chrome, lambda: _upload(
      chrome, 'audio-file', recordings['silent']), 'silent audio')
  assert 'silent.wav' in text and 'silent' in text, text
  words = np.full((600, 800), 255, np.uint8)
  words[100:120, 50:300] = 0                     # a line of text, no staff
  Image.fromarray(words).save(tmp_path / 'letter.png')

  def index_letter():
    _upload(chrome, 'page-files', tmp_path / 'letter.png')
    _css(chrome, '#index-pages')[0].click()
  text = _error_after(chrome, index_letter, 'a page without staves')
  assert 'letter.png' in text and 'no five-line staff' in text, text
  text = _error_after(chrome, lambda: _upload(
      chrome, 'index-file', pages['other_index']), 'another model\'s index')
  assert 'other_model.npz' in text and 'another model' in text, text
  big = tmp_path / 'big.wav'
  big.write_bytes(b'\0' * int((MAX_UPLOAD_MB + 1) * 1e6))
  text = _error_after(chrome, lambda: _upload(chrome, 'audio-file', big),
                      'a file over the limit')
  assert 'big.wav' in text and f'over the limit of {MAX_UPLOAD_MB} MB' in (
      text), text
  # The server refuses it too, whatever the page checks.
  request = urllib.request.Request(
      server + 'api/upload', data=big.read_bytes(), method='POST',
      headers={'X-Filename': 'big.wav'})
  with pytest.raises(urllib.error.HTTPError) as refused:
    urllib.request.urlopen(request)
  assert refused.value.code == 400
  assert 'over the limit' in json.load(refused.value)['error']
  # The bundled test pieces' pages, engraved on the fly, replace the pages.
  _css(chrome, '#bundled-pages')[0].click()
  _wait(chrome, lambda c: 'bundled test pieces' in _text(c, 'collection'),
        'the bundled pages indexed')
  names = [f.get_attribute('data-name') for f in _css(chrome, 'figure.page')]
  assert names == [p.stem + '.png' for p in pages['paths']], names
  _wait(chrome, lambda c: all(i.get_attribute('naturalWidth') != '0'
                              for i in _css(c, 'figure.page img')),
        'the bundled pages shown')
