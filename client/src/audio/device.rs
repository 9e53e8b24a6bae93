//! Sound devices through cpal: capture delivering 48 kHz mono f32 into a ring buffer, and
//! playback taking 48 kHz mono f32 from one.
//!
//! Real-time rule: the cpal callbacks only move samples through lock-free ring buffers
//! (`push_slice` / `pop_slice`, silence on underrun) and count problems in atomics. Channel
//! mixing and resampling, when the device is not 48 kHz mono, run on a separate DSP thread
//! between two ring buffers. A machine without a sound card gets a clear [`AudioError`]; the
//! rest of the client works without devices.
//!
//! `cpal::Stream` is not `Send` on every platform: keep [`InputStream`] / [`OutputStream`] on
//! the thread that opened them; the ring-buffer ends are `Send`.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use cpal::traits::{DeviceTrait, HostTrait, StreamTrait};
use cpal::{SampleFormat, StreamConfig};
use ringbuf::traits::{Consumer, Observer, Producer, Split};
use ringbuf::{HeapCons, HeapProd, HeapRb};

use super::resample::MonoResampler;
use super::{AudioError, SAMPLE_RATE};

/// Largest callback buffer converted at once from integer formats (larger ones are processed
/// in several passes over this preallocated scratch).
const SCRATCH: usize = 8192;
/// How often the DSP thread looks for work.
const DSP_POLL: Duration = Duration::from_millis(2);

/// Problems counted by the audio callbacks (they may not log).
#[derive(Debug, Default)]
pub struct DeviceCounters {
    /// Capture: samples dropped because the consumer did not keep up.
    pub overruns: AtomicU64,
    /// Playback: samples of silence played because the producer had nothing ready.
    pub underruns: AtomicU64,
    /// Errors the backend reported on the stream.
    pub errors: AtomicU64,
}

/// Device names, for `--input-device` / `--output-device` and the TUI's settings.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DeviceList {
    /// Capture devices.
    pub inputs: Vec<String>,
    /// Playback devices.
    pub outputs: Vec<String>,
    /// The system default capture device, if any.
    pub default_input: Option<String>,
    /// The system default playback device, if any.
    pub default_output: Option<String>,
}

/// Stops alsa-lib printing its own error lines on this thread. Without a sound card, each
/// device lookup makes it print a dozen (`ALSA lib confmisc.c:855:(parse_card) cannot find
/// card '0'`, ...) to stderr, over the TUI's screen, before kv's one-line error, and all
/// through test logs; the failure still reaches the user as that [`AudioError`].
///
/// Why per thread: alsa-lib's global hook, `snd_lib_error_set_handler`, wants a C-variadic
/// function, which stable Rust cannot define (and a null pointer restores the printing
/// default). Its default handler first hands the message to a thread-local handler, set with
/// `snd_lib_error_set_local`, which takes a `va_list` and so is plain `extern "C"`. Every
/// function here that touches cpal calls this first, once per thread. ALSA calls on cpal's
/// own stream threads (recovering from an xrun) are not covered, and rarely print.
fn quiet_alsa() {
    #[cfg(target_os = "linux")]
    {
        use std::cell::Cell;
        thread_local! {
            static QUIET: Cell<bool> = const { Cell::new(false) };
        }
        if !QUIET.with(|q| q.replace(true)) {
            // SAFETY: stores a function pointer in alsa-lib's thread-local slot; the handler
            // has exactly the `snd_local_error_handler_t` signature and reads no argument.
            unsafe {
                alsa_sys::snd_lib_error_set_local(Some(discard_alsa_error));
            }
        }
    }
}

/// alsa-lib's error message, dropped (see [`quiet_alsa`]).
#[cfg(target_os = "linux")]
unsafe extern "C" fn discard_alsa_error(
    _file: *const std::ffi::c_char,
    _line: std::ffi::c_int,
    _func: *const std::ffi::c_char,
    _err: std::ffi::c_int,
    _fmt: *const std::ffi::c_char,
    _args: *mut alsa_sys::__va_list_tag,
) {
}

/// Lists the default host's devices (empty lists on a machine without sound).
pub fn list_devices() -> Result<DeviceList, AudioError> {
    quiet_alsa();
    let host = cpal::default_host();
    let names = |it: Result<_, cpal::DevicesError>| -> Result<Vec<String>, AudioError> {
        let it: Box<dyn Iterator<Item = cpal::Device>> = match it {
            Ok(i) => i,
            Err(e) => return Err(AudioError::Device(e.to_string())),
        };
        Ok(it.filter_map(|d| d.name().ok()).collect())
    };
    Ok(DeviceList {
        inputs: names(
            host.input_devices()
                .map(|i| Box::new(i) as Box<dyn Iterator<Item = _>>),
        )?,
        outputs: names(
            host.output_devices()
                .map(|i| Box::new(i) as Box<dyn Iterator<Item = _>>),
        )?,
        default_input: host.default_input_device().and_then(|d| d.name().ok()),
        default_output: host.default_output_device().and_then(|d| d.name().ok()),
    })
}

fn find_device(input: bool, name: &str) -> Result<cpal::Device, AudioError> {
    quiet_alsa();
    let host = cpal::default_host();
    let kind = if input { "input" } else { "output" };
    let found = if name == "default" {
        if input {
            host.default_input_device()
        } else {
            host.default_output_device()
        }
    } else {
        let devs = if input {
            host.input_devices()
        } else {
            host.output_devices()
        };
        devs.ok()
            .and_then(|mut it| it.find(|d| d.name().is_ok_and(|n| n == name)))
    };
    found.ok_or_else(|| {
        let list = list_devices().unwrap_or_default();
        let names = if input { list.inputs } else { list.outputs };
        AudioError::NoDevice {
            kind,
            name: name.to_string(),
            available: if names.is_empty() {
                "none".into()
            } else {
                names.join(", ")
            },
        }
    })
}

/// Picks the device's default config, preferring f32 at 48 kHz when the device offers it.
fn pick_config(
    dev: &cpal::Device,
    input: bool,
) -> Result<(StreamConfig, SampleFormat), AudioError> {
    let default = if input {
        dev.default_input_config()
    } else {
        dev.default_output_config()
    }
    .map_err(|e| AudioError::Device(e.to_string()))?;
    let ranges: Vec<cpal::SupportedStreamConfigRange> = if input {
        dev.supported_input_configs().map(|i| i.collect())
    } else {
        dev.supported_output_configs().map(|i| i.collect())
    }
    .unwrap_or_default();
    let want = cpal::SampleRate(SAMPLE_RATE);
    let best = ranges
        .iter()
        .filter(|r| r.sample_format() == SampleFormat::F32)
        .filter(|r| r.min_sample_rate() <= want && want <= r.max_sample_rate())
        .min_by_key(|r| r.channels())
        .map(|r| r.with_sample_rate(want));
    let chosen = best.unwrap_or(default);
    Ok((chosen.config(), chosen.sample_format()))
}

/// The conversion thread between the callback's ring and the user's, when the device is
/// not 48 kHz mono. Dropping it stops and joins the thread (after the stream, field order).
struct DspThread {
    stop: Arc<AtomicBool>,
    handle: Option<JoinHandle<()>>,
}

impl Drop for DspThread {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
    }
}

/// An open capture stream. Dropping it stops capture and the DSP thread.
pub struct InputStream {
    _stream: cpal::Stream,
    /// Callback-side counters.
    pub counters: Arc<DeviceCounters>,
    /// The device's own rate and channel count.
    pub device_rate: u32,
    /// Channels the device delivers.
    pub device_channels: u16,
    _dsp: Option<DspThread>,
}

impl std::fmt::Debug for InputStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("InputStream")
            .field("device_rate", &self.device_rate)
            .field("device_channels", &self.device_channels)
            .finish_non_exhaustive()
    }
}

/// An open playback stream. Dropping it stops playback and the DSP thread.
pub struct OutputStream {
    _stream: cpal::Stream,
    /// Callback-side counters.
    pub counters: Arc<DeviceCounters>,
    /// The device's own rate.
    pub device_rate: u32,
    /// Channels the device plays.
    pub device_channels: u16,
    _dsp: Option<DspThread>,
}

impl std::fmt::Debug for OutputStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OutputStream")
            .field("device_rate", &self.device_rate)
            .field("device_channels", &self.device_channels)
            .finish_non_exhaustive()
    }
}

/// Builds a capture callback for sample type `T` that pushes f32 into `prod`.
fn input_callback<T: cpal::SizedSample + Send + 'static>(
    mut prod: HeapProd<f32>,
    counters: Arc<DeviceCounters>,
    to_f32: fn(T) -> f32,
) -> impl FnMut(&[T], &cpal::InputCallbackInfo) + Send + 'static {
    let mut scratch = vec![0.0f32; SCRATCH];
    move |data: &[T], _| {
        for chunk in data.chunks(SCRATCH) {
            let buf = &mut scratch[..chunk.len()];
            for (d, s) in buf.iter_mut().zip(chunk) {
                *d = to_f32(*s);
            }
            let pushed = prod.push_slice(buf);
            if pushed < buf.len() {
                counters
                    .overruns
                    .fetch_add((buf.len() - pushed) as u64, Ordering::Relaxed);
            }
        }
    }
}

/// Builds a playback callback for sample type `T` that pops f32 from `cons`.
fn output_callback<T: cpal::SizedSample + Send + 'static>(
    mut cons: HeapCons<f32>,
    counters: Arc<DeviceCounters>,
    from_f32: fn(f32) -> T,
) -> impl FnMut(&mut [T], &cpal::OutputCallbackInfo) + Send + 'static {
    let mut scratch = vec![0.0f32; SCRATCH];
    move |data: &mut [T], _| {
        for chunk in data.chunks_mut(SCRATCH) {
            let buf = &mut scratch[..chunk.len()];
            let got = cons.pop_slice(buf);
            if got < buf.len() {
                buf[got..].fill(0.0);
                counters
                    .underruns
                    .fetch_add((buf.len() - got) as u64, Ordering::Relaxed);
            }
            for (d, s) in chunk.iter_mut().zip(buf.iter()) {
                *d = from_f32(*s);
            }
        }
    }
}

fn i16_to_f32(s: i16) -> f32 {
    f32::from(s) / 32768.0
}
fn u16_to_f32(s: u16) -> f32 {
    (f32::from(s) - 32768.0) / 32768.0
}
fn f32_to_i16(s: f32) -> i16 {
    (s.clamp(-1.0, 1.0) * 32767.0) as i16
}
fn f32_to_u16(s: f32) -> u16 {
    (s.clamp(-1.0, 1.0) * 32767.0 + 32768.0) as u16
}

/// The ring between a device callback and its DSP thread, in device samples (interleaved,
/// at the device rate): 200 ms, so a late DSP thread does not cost audio.
fn raw_ring(rate: u32, channels: u16) -> (HeapProd<f32>, HeapCons<f32>) {
    let cap = (rate as usize / 5) * usize::from(channels.max(1));
    HeapRb::<f32>::new(cap.max(4096)).split()
}

/// cpal's stream-error callback: counts, since it runs on the audio thread where logging
/// is not allowed.
fn count_errors(counters: &Arc<DeviceCounters>) -> impl FnMut(cpal::StreamError) + Send + 'static {
    let c = counters.clone();
    move |_e| {
        c.errors.fetch_add(1, Ordering::Relaxed);
    }
}

/// Opens capture device `name` ("default" for the system's). Returns the stream handle and
/// the consumer end of a ring of `capacity` samples of 48 kHz mono f32.
pub fn open_input(name: &str, capacity: usize) -> Result<(InputStream, HeapCons<f32>), AudioError> {
    let dev = find_device(true, name)?;
    let (config, format) = pick_config(&dev, true)?;
    let rate = config.sample_rate.0;
    let channels = config.channels;
    let counters = Arc::new(DeviceCounters::default());
    let (user_prod, user_cons) = HeapRb::<f32>::new(capacity.max(1024)).split();
    let direct = rate == SAMPLE_RATE && channels == 1;
    // The callback writes either straight into the user's ring or into a raw ring for the
    // DSP thread.
    let (cb_prod, dsp) = if direct {
        (user_prod, None)
    } else {
        let (raw_prod, raw_cons) = raw_ring(rate, channels);
        let stop = Arc::new(AtomicBool::new(false));
        let h = spawn_capture_dsp(
            raw_cons,
            user_prod,
            rate,
            channels,
            stop.clone(),
            counters.clone(),
        )?;
        (
            raw_prod,
            Some(DspThread {
                stop,
                handle: Some(h),
            }),
        )
    };
    let err = count_errors(&counters);
    let stream = match format {
        SampleFormat::F32 => dev.build_input_stream(
            &config,
            input_callback::<f32>(cb_prod, counters.clone(), |s| s),
            err,
            None,
        ),
        SampleFormat::I16 => dev.build_input_stream(
            &config,
            input_callback::<i16>(cb_prod, counters.clone(), i16_to_f32),
            err,
            None,
        ),
        SampleFormat::U16 => dev.build_input_stream(
            &config,
            input_callback::<u16>(cb_prod, counters.clone(), u16_to_f32),
            err,
            None,
        ),
        other => {
            return Err(AudioError::Device(format!(
                "unsupported capture sample format {other}"
            )))
        }
    }
    .map_err(|e| AudioError::Device(e.to_string()))?;
    stream
        .play()
        .map_err(|e| AudioError::Device(e.to_string()))?;
    tracing::info!(device = name, rate, channels, "capture started");
    Ok((
        InputStream {
            _stream: stream,
            counters,
            device_rate: rate,
            device_channels: channels,
            _dsp: dsp,
        },
        user_cons,
    ))
}

fn spawn_capture_dsp(
    mut raw: HeapCons<f32>,
    mut out: HeapProd<f32>,
    rate: u32,
    channels: u16,
    stop: Arc<AtomicBool>,
    counters: Arc<DeviceCounters>,
) -> Result<JoinHandle<()>, AudioError> {
    let mut rs = if rate == SAMPLE_RATE {
        None
    } else {
        Some(MonoResampler::new(rate, SAMPLE_RATE)?)
    };
    let ch = usize::from(channels.max(1));
    std::thread::Builder::new()
        .name("kv-capture-dsp".into())
        .spawn(move || {
            super::priority::raise_current_thread();
            let mut inter = vec![0.0f32; 480 * ch];
            let mut mono = Vec::with_capacity(480);
            let mut res = Vec::with_capacity(2048);
            while !stop.load(Ordering::Relaxed) {
                if raw.occupied_len() < inter.len() {
                    std::thread::sleep(DSP_POLL);
                    continue;
                }
                let n = raw.pop_slice(&mut inter);
                mono.clear();
                mono.extend(
                    inter[..n]
                        .chunks_exact(ch)
                        .map(|f| f.iter().sum::<f32>() / ch as f32),
                );
                let ready: &[f32] = match rs.as_mut() {
                    Some(r) => {
                        res.clear();
                        if r.process(&mono, &mut res).is_err() {
                            continue;
                        }
                        &res
                    }
                    None => &mono,
                };
                let pushed = out.push_slice(ready);
                if pushed < ready.len() {
                    counters
                        .overruns
                        .fetch_add((ready.len() - pushed) as u64, Ordering::Relaxed);
                }
            }
        })
        .map_err(|e| AudioError::Device(format!("cannot start DSP thread: {e}")))
}

/// Opens playback device `name` ("default" for the system's). Returns the stream handle and
/// the producer end of a ring of `capacity` samples of 48 kHz mono f32 to play.
pub fn open_output(
    name: &str,
    capacity: usize,
) -> Result<(OutputStream, HeapProd<f32>), AudioError> {
    let dev = find_device(false, name)?;
    let (config, format) = pick_config(&dev, false)?;
    let rate = config.sample_rate.0;
    let channels = config.channels;
    let counters = Arc::new(DeviceCounters::default());
    let (user_prod, user_cons) = HeapRb::<f32>::new(capacity.max(1024)).split();
    let direct = rate == SAMPLE_RATE && channels == 1;
    let (cb_cons, dsp) = if direct {
        (user_cons, None)
    } else {
        let (raw_prod, raw_cons) = raw_ring(rate, channels);
        let stop = Arc::new(AtomicBool::new(false));
        let h = spawn_playback_dsp(user_cons, raw_prod, rate, channels, stop.clone())?;
        (
            raw_cons,
            Some(DspThread {
                stop,
                handle: Some(h),
            }),
        )
    };
    let err = count_errors(&counters);
    let stream = match format {
        SampleFormat::F32 => dev.build_output_stream(
            &config,
            output_callback::<f32>(cb_cons, counters.clone(), |s| s),
            err,
            None,
        ),
        SampleFormat::I16 => dev.build_output_stream(
            &config,
            output_callback::<i16>(cb_cons, counters.clone(), f32_to_i16),
            err,
            None,
        ),
        SampleFormat::U16 => dev.build_output_stream(
            &config,
            output_callback::<u16>(cb_cons, counters.clone(), f32_to_u16),
            err,
            None,
        ),
        other => {
            return Err(AudioError::Device(format!(
                "unsupported playback sample format {other}"
            )))
        }
    }
    .map_err(|e| AudioError::Device(e.to_string()))?;
    stream
        .play()
        .map_err(|e| AudioError::Device(e.to_string()))?;
    tracing::info!(device = name, rate, channels, "playback started");
    Ok((
        OutputStream {
            _stream: stream,
            counters,
            device_rate: rate,
            device_channels: channels,
            _dsp: dsp,
        },
        user_prod,
    ))
}

fn spawn_playback_dsp(
    mut input: HeapCons<f32>,
    mut raw: HeapProd<f32>,
    rate: u32,
    channels: u16,
    stop: Arc<AtomicBool>,
) -> Result<JoinHandle<()>, AudioError> {
    let mut rs = if rate == SAMPLE_RATE {
        None
    } else {
        Some(MonoResampler::new(SAMPLE_RATE, rate)?)
    };
    let ch = usize::from(channels.max(1));
    // Keep only ~20 ms queued at the device so conversion adds little latency.
    let high_water = (rate as usize / 50) * ch;
    std::thread::Builder::new()
        .name("kv-playback-dsp".into())
        .spawn(move || {
            super::priority::raise_current_thread();
            let mut mono = vec![0.0f32; 480];
            let mut res = Vec::with_capacity(2048);
            let mut inter = Vec::with_capacity(2048 * ch);
            while !stop.load(Ordering::Relaxed) {
                if raw.occupied_len() >= high_water || input.occupied_len() < mono.len() {
                    std::thread::sleep(DSP_POLL);
                    continue;
                }
                let n = input.pop_slice(&mut mono);
                let ready: &[f32] = match rs.as_mut() {
                    Some(r) => {
                        res.clear();
                        if r.process(&mono[..n], &mut res).is_err() {
                            continue;
                        }
                        &res
                    }
                    None => &mono[..n],
                };
                inter.clear();
                for s in ready {
                    inter.extend(std::iter::repeat_n(*s, ch));
                }
                raw.push_slice(&inter);
            }
        })
        .map_err(|e| AudioError::Device(format!("cannot start DSP thread: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_device_is_a_clear_error() {
        match open_input("no such device 42", 4800) {
            Err(AudioError::NoDevice { kind, name, .. }) => {
                assert_eq!(kind, "input");
                assert_eq!(name, "no such device 42");
            }
            // Some hosts fail earlier (no backend at all); that must still be an error.
            Err(AudioError::Device(_)) => {}
            Err(e) => panic!("unexpected error {e}"),
            Ok(_) => panic!("a device with that name cannot exist"),
        }
    }

    #[test]
    fn sample_conversions_stay_in_range() {
        assert_eq!(f32_to_i16(2.0), 32767);
        assert_eq!(f32_to_i16(-2.0), -32767);
        assert!((i16_to_f32(-32768) + 1.0).abs() < 1e-6);
        assert!(u16_to_f32(32768).abs() < 1e-6);
        assert_eq!(f32_to_u16(0.0), 32768);
    }
}
