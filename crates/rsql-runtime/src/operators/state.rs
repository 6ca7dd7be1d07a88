//! Keyed state helpers: rows and keys encoded with arrow's row format (compact, comparable, and
//! hashable as bytes), the keyed slot store the join and the group aggregate keep their state in,
//! state time-to-live (`table.exec.state.ttl`), and a small length-prefixed encoding for snapshots.

use std::hash::BuildHasher;
use std::time::Duration;

use foldhash::fast::FixedState;
use rsql_common::arrow::array::ArrayRef;
use rsql_common::arrow::datatypes::SchemaRef;
use rsql_common::arrow::row::{RowConverter, Rows, SortField};
use rsql_common::{Result, RsqlError};

use crate::clock::{wall_clock, Clock};

/// Encodes chosen columns of batches to row bytes and back.
pub struct RowCodec {
    converter: RowConverter,
    indices: Vec<usize>,
}

impl RowCodec {
    /// A codec over `indices` of `schema` (all columns when `indices` is None).
    pub fn new(schema: &SchemaRef, indices: Option<&[usize]>) -> Result<Self> {
        let indices: Vec<usize> = match indices {
            Some(i) => i.to_vec(),
            None => (0..schema.fields().len()).collect(),
        };
        let fields = indices.iter().map(|i| SortField::new(schema.field(*i).data_type().clone())).collect();
        Ok(RowCodec { converter: RowConverter::new(fields)?, indices })
    }

    /// Encodes the codec's columns of `columns` (the whole batch's columns).
    pub fn encode(&self, columns: &[ArrayRef]) -> Result<Rows> {
        let cols: Vec<ArrayRef> = self.indices.iter().map(|i| columns[*i].clone()).collect();
        Ok(self.converter.convert_columns(&cols)?)
    }

    /// Decodes row bytes produced by `encode` back into columns.
    pub fn decode<'a>(&self, rows: impl IntoIterator<Item = &'a [u8]>) -> Result<Vec<ArrayRef>> {
        let parser = self.converter.parser();
        let parsed: Vec<_> = rows.into_iter().map(|b| parser.parse(b)).collect();
        Ok(self.converter.convert_rows(parsed)?)
    }
}

/// Processing-time state TTL as in Flink's `table.exec.state.ttl`: a key's state that was not
/// written for the TTL is expired (OnCreateAndWrite), never returned (NeverReturnExpired), and
/// cleaned up when it is next accessed and by an incremental sweep. A TTL of zero is off.
#[derive(Clone)]
pub struct StateTtl {
    ttl_ms: u64,
    clock: Clock,
}

impl std::fmt::Debug for StateTtl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "StateTtl({} ms)", self.ttl_ms)
    }
}

impl Default for StateTtl {
    fn default() -> Self {
        StateTtl::new(Duration::ZERO)
    }
}

impl StateTtl {
    /// A TTL on the wall clock (milliseconds since the epoch); zero turns it off.
    pub fn new(ttl: Duration) -> Self {
        StateTtl::with_clock(ttl, wall_clock())
    }

    /// A TTL on a given clock returning milliseconds (tests drive time by hand).
    pub fn with_clock(ttl: Duration, clock: Clock) -> Self {
        StateTtl { ttl_ms: u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX), clock }
    }

    pub fn enabled(&self) -> bool {
        self.ttl_ms > 0
    }

    /// The current processing time in milliseconds; 0 when the TTL is off (no clock is read).
    pub fn now(&self) -> u64 {
        if self.enabled() {
            (self.clock)()
        } else {
            0
        }
    }

    /// Whether state last written at `written` has expired at `now`.
    pub fn expired(&self, written: u64, now: u64) -> bool {
        self.ttl_ms > 0 && now.saturating_sub(written) >= self.ttl_ms
    }
}

/// Key bytes of a [`Slot`]: short keys (most encoded join and group keys) are stored inside the
/// slot, so looking a key up touches one cache line instead of following a pointer; longer keys
/// live on the heap. Dereferences to the bytes.
pub enum SlotKey {
    Inline { len: u8, bytes: [u8; INLINE_KEY] },
    Heap(Box<[u8]>),
}

/// Longest key stored inline (the enum stays 24 bytes, the size of a boxed slice plus its tag).
const INLINE_KEY: usize = 22;

impl From<&[u8]> for SlotKey {
    fn from(key: &[u8]) -> Self {
        if key.len() <= INLINE_KEY {
            let mut bytes = [0u8; INLINE_KEY];
            bytes[..key.len()].copy_from_slice(key);
            SlotKey::Inline { len: key.len() as u8, bytes }
        } else {
            SlotKey::Heap(key.into())
        }
    }
}

impl Default for SlotKey {
    /// The empty key.
    fn default() -> Self {
        SlotKey::Inline { len: 0, bytes: [0; INLINE_KEY] }
    }
}

impl std::ops::Deref for SlotKey {
    type Target = [u8];

    fn deref(&self) -> &[u8] {
        match self {
            SlotKey::Inline { len, bytes } => &bytes[..*len as usize],
            SlotKey::Heap(b) => b,
        }
    }
}

/// One key's state in a [`KeyedStore`].
pub struct Slot<T> {
    pub key: SlotKey,
    pub value: T,
    /// Processing time of the last write (milliseconds; 0 when no TTL is set).
    pub written: u64,
}

/// Keyed state: a slab of slots (each holding its key bytes once) and a hash table of slot
/// indices. Slot ids stay stable until the slot is removed, so a batch can resolve every row's
/// key once and then update state by index.
pub struct KeyedStore<T> {
    index: SlotIndex,
    slots: Vec<Option<Slot<T>>>,
    free: Vec<u32>,
    hasher: FixedState,
    sweep_at: usize,
}

impl<T> Default for KeyedStore<T> {
    fn default() -> Self {
        KeyedStore { index: SlotIndex::default(), slots: Vec::new(), free: Vec::new(), hasher: FixedState::with_seed(0x5eed), sweep_at: 0 }
    }
}

impl<T> KeyedStore<T> {
    /// The hash of `key` that [`KeyedStore::find_hashed`], [`KeyedStore::insert_hashed`] and
    /// [`KeyedStore::prefetch`] take.
    pub fn hash(&self, key: &[u8]) -> u64 {
        self.hasher.hash_one(key)
    }

    pub fn len(&self) -> usize {
        self.index.len
    }

    pub fn is_empty(&self) -> bool {
        self.index.len == 0
    }

    /// The slot holding `key`.
    pub fn find(&self, key: &[u8]) -> Option<u32> {
        self.find_hashed(self.hash(key), key)
    }

    /// The slot holding `key`, whose hash is `h`.
    pub fn find_hashed(&self, h: u64, key: &[u8]) -> Option<u32> {
        let slots = &self.slots;
        self.index.find(h, |i| slots[i as usize].as_ref().is_some_and(|s| &*s.key == key))
    }

    /// Starts loading what a later lookup of hash `h` reads: its index entry and, when the
    /// entry is already cached (prefetched earlier), the slot it points to. Operators call it a
    /// few rows ahead so that the cache misses of a batch's lookups overlap.
    #[inline]
    pub fn prefetch(&self, h: u64, slot_too: bool) {
        if self.index.entries.is_empty() {
            return;
        }
        let at = self.index.home(h);
        if slot_too {
            let e = self.index.entries[at];
            if e != 0 && e >> 32 == h >> 32 {
                if let Some(s) = self.slots.get(((e as u32) - 1) as usize) {
                    prefetch(s);
                }
            }
        } else {
            prefetch(&self.index.entries[at]);
        }
    }

    /// Adds `key` (which must not be present) and returns its slot.
    pub fn insert(&mut self, key: &[u8], value: T, written: u64) -> u32 {
        let h = self.hash(key);
        self.insert_hashed(h, key, value, written)
    }

    /// [`KeyedStore::insert`] with the key's hash already computed.
    pub fn insert_hashed(&mut self, h: u64, key: &[u8], value: T, written: u64) -> u32 {
        let slot = Slot { key: key.into(), value, written };
        let id = match self.free.pop() {
            Some(id) => {
                self.slots[id as usize] = Some(slot);
                id
            }
            None => {
                self.slots.push(Some(slot));
                (self.slots.len() - 1) as u32
            }
        };
        let slots = &self.slots;
        let hasher = &self.hasher;
        self.index.insert(h, id, |i| slots[i as usize].as_ref().map(|s| hasher.hash_one(&*s.key)).unwrap_or(0));
        id
    }

    /// The slot `id` (a live slot returned by `find` or `insert`).
    pub fn get(&self, id: u32) -> Option<&Slot<T>> {
        self.slots.get(id as usize).and_then(|s| s.as_ref())
    }

    pub fn get_mut(&mut self, id: u32) -> Option<&mut Slot<T>> {
        self.slots.get_mut(id as usize).and_then(|s| s.as_mut())
    }

    /// Removes slot `id` and returns it.
    pub fn remove(&mut self, id: u32) -> Option<Slot<T>> {
        let key_hash = self.slots.get(id as usize)?.as_ref().map(|s| self.hash(&s.key))?;
        self.index.remove(key_hash, id);
        self.free.push(id);
        self.slots[id as usize].take()
    }

    /// Live slots with their ids.
    pub fn iter(&self) -> impl Iterator<Item = (u32, &Slot<T>)> {
        self.slots.iter().enumerate().filter_map(|(i, s)| s.as_ref().map(|s| (i as u32, s)))
    }

    pub fn clear(&mut self) {
        self.index = SlotIndex::default();
        self.slots.clear();
        self.free.clear();
        self.sweep_at = 0;
    }

    /// The slot holding `key` unless its state has expired at `now`; an expired slot is removed
    /// (expired state is never returned).
    pub fn find_live(&mut self, key: &[u8], ttl: &StateTtl, now: u64) -> Option<u32> {
        let id = self.find(key)?;
        if self.get(id).is_some_and(|s| ttl.expired(s.written, now)) {
            self.remove(id);
            return None;
        }
        Some(id)
    }

    /// The incremental TTL cleanup run after a batch of `rows` rows: looks at a few more slots
    /// than rows came in. Does nothing without a TTL.
    pub fn sweep_expired(&mut self, ttl: &StateTtl, rows: usize) {
        if ttl.enabled() {
            let now = ttl.now();
            self.sweep(rows.max(64) * 2, |slot| ttl.expired(slot.written, now));
        }
    }

    /// Incremental cleanup: looks at the next `budget` slots (wrapping around) and removes those
    /// for which `expired` holds. Returns how many were removed.
    pub fn sweep(&mut self, budget: usize, mut expired: impl FnMut(&Slot<T>) -> bool) -> usize {
        let n = self.slots.len();
        if n == 0 {
            return 0;
        }
        let mut removed = 0;
        for _ in 0..budget.min(n) {
            if self.sweep_at >= n {
                self.sweep_at = 0;
            }
            let id = self.sweep_at as u32;
            self.sweep_at += 1;
            if self.slots[id as usize].as_ref().is_some_and(&mut expired) {
                self.remove(id);
                removed += 1;
            }
        }
        removed
    }
}

/// A growable vector of bits (one per slot id).
#[derive(Default, Clone)]
pub struct Bits(Vec<u64>);

impl Bits {
    #[inline]
    pub fn get(&self, i: u32) -> bool {
        self.0.get(i as usize / 64).is_some_and(|w| w >> (i % 64) & 1 == 1)
    }

    #[inline]
    pub fn set(&mut self, i: u32, on: bool) {
        let w = i as usize / 64;
        if w >= self.0.len() {
            if !on {
                return;
            }
            self.0.resize(w + 1, 0);
        }
        if on {
            self.0[w] |= 1 << (i % 64);
        } else {
            self.0[w] &= !(1 << (i % 64));
        }
    }

    pub fn clear(&mut self) {
        self.0.clear();
    }

    pub fn bytes(&self) -> usize {
        self.0.capacity() * 8
    }
}

/// Stores `x` at `i` of a per-slot column, growing the column when `i` is a new slot id.
#[inline]
pub fn put<T: Default>(column: &mut Vec<T>, i: u32, x: T) {
    let i = i as usize;
    if i >= column.len() {
        column.resize_with(i + 1, T::default);
    }
    column[i] = x;
}

/// Keys to dense slot ids, for state the caller keeps in its own columns indexed by slot id
/// (the group aggregate's accumulators: a vector per aggregate call rather than a record per
/// key). Keys that all have one length (fixed-width group keys) are stored end to end in one byte
/// vector; once keys of another length appear every key gets a [`SlotKey`]. Freed ids are handed
/// out again first, so the caller's columns stay dense. Write times for the state TTL are kept
/// only when asked for.
pub struct KeySlots {
    index: SlotIndex,
    keys: KeyBytes,
    live: Bits,
    /// Write time per slot id (milliseconds), when tracked.
    written: Option<Vec<u64>>,
    free: Vec<u32>,
    /// Slot ids handed out so far (free or live).
    ids: u32,
    hasher: FixedState,
    sweep_at: u32,
}

enum KeyBytes {
    /// Every key has `width` bytes (None before the first key), slot id `i`'s at `i * width`.
    Fixed { width: Option<usize>, bytes: Vec<u8> },
    Var(Vec<SlotKey>),
}

impl KeyBytes {
    #[inline]
    fn get(&self, id: u32) -> &[u8] {
        match self {
            KeyBytes::Fixed { width: Some(w), bytes } => bytes.get(id as usize * w..(id as usize + 1) * w).unwrap_or(&[]),
            KeyBytes::Fixed { width: None, .. } => &[],
            KeyBytes::Var(keys) => keys.get(id as usize).map(|k| &**k).unwrap_or(&[]),
        }
    }
}

impl Default for KeySlots {
    fn default() -> Self {
        KeySlots {
            index: SlotIndex::default(),
            keys: KeyBytes::Fixed { width: None, bytes: Vec::new() },
            live: Bits::default(),
            written: None,
            free: Vec::new(),
            ids: 0,
            hasher: FixedState::with_seed(0x5eed),
            sweep_at: 0,
        }
    }
}

impl KeySlots {
    /// Keeps a write time per key (for a state TTL).
    pub fn track_written(&mut self) {
        if self.written.is_none() {
            self.written = Some(vec![0; self.ids as usize]);
        }
    }

    /// The hash of `key` that [`KeySlots::find_hashed`], [`KeySlots::insert_hashed`] and
    /// [`KeySlots::prefetch`] take.
    pub fn hash(&self, key: &[u8]) -> u64 {
        self.hasher.hash_one(key)
    }

    pub fn len(&self) -> usize {
        self.index.len
    }

    pub fn is_empty(&self) -> bool {
        self.index.len == 0
    }

    /// The key of slot `id`.
    #[inline]
    pub fn key(&self, id: u32) -> &[u8] {
        self.keys.get(id)
    }

    pub fn is_live(&self, id: u32) -> bool {
        self.live.get(id)
    }

    pub fn find(&self, key: &[u8]) -> Option<u32> {
        self.find_hashed(self.hash(key), key)
    }

    pub fn find_hashed(&self, h: u64, key: &[u8]) -> Option<u32> {
        let keys = &self.keys;
        self.index.find(h, |i| keys.get(i) == key)
    }

    /// As [`KeyedStore::prefetch`]: the index entry of hash `h` or, once that is cached, the key
    /// bytes it points to.
    #[inline]
    pub fn prefetch(&self, h: u64, key_too: bool) {
        if self.index.entries.is_empty() {
            return;
        }
        let at = self.index.home(h);
        if key_too {
            let e = self.index.entries[at];
            if e != 0 && e >> 32 == h >> 32 {
                let id = (e as u32) - 1;
                match &self.keys {
                    KeyBytes::Fixed { width: Some(w), bytes } => {
                        if let Some(b) = bytes.get(id as usize * w) {
                            prefetch(b);
                        }
                    }
                    KeyBytes::Fixed { width: None, .. } => {}
                    KeyBytes::Var(keys) => {
                        if let Some(k) = keys.get(id as usize) {
                            prefetch(k);
                        }
                    }
                }
            }
        } else {
            prefetch(&self.index.entries[at]);
        }
    }

    /// Adds `key` (which must not be present, hash `h`) written at `written`, and returns its slot
    /// id: a freed id when there is one, else the next new one.
    pub fn insert_hashed(&mut self, h: u64, key: &[u8], written: u64) -> u32 {
        let id = self.free.pop().unwrap_or(self.ids);
        if id == self.ids {
            self.ids += 1;
        }
        self.store_key(id, key);
        self.live.set(id, true);
        if let Some(w) = &mut self.written {
            put(w, id, written);
        }
        let keys = &self.keys;
        let hasher = &self.hasher;
        self.index.insert(h, id, |i| hasher.hash_one(keys.get(i)));
        id
    }

    fn store_key(&mut self, id: u32, key: &[u8]) {
        if let KeyBytes::Fixed { width, bytes } = &mut self.keys {
            let w = *width.get_or_insert(key.len());
            if w == key.len() {
                let at = id as usize * w;
                if bytes.len() < at + w {
                    bytes.resize(at + w, 0);
                }
                bytes[at..at + w].copy_from_slice(key);
                return;
            }
            // A key of another length: from now on every key has its own.
            let live = &self.live;
            let var = (0..self.ids)
                .map(|i| match bytes.get(i as usize * w..(i as usize + 1) * w) {
                    Some(k) if i != id && live.get(i) => SlotKey::from(k),
                    _ => SlotKey::default(),
                })
                .collect();
            self.keys = KeyBytes::Var(var);
        }
        if let KeyBytes::Var(keys) = &mut self.keys {
            put(keys, id, SlotKey::from(key));
        }
    }

    /// Marks slot `id` written at `now` (when write times are tracked).
    #[inline]
    pub fn touch(&mut self, id: u32, now: u64) {
        if let Some(w) = self.written.as_mut().and_then(|w| w.get_mut(id as usize)) {
            *w = now;
        }
    }

    /// When slot `id` was last written; 0 when write times are not tracked.
    pub fn written(&self, id: u32) -> u64 {
        self.written.as_ref().and_then(|w| w.get(id as usize)).copied().unwrap_or(0)
    }

    /// Removes slot `id`; false when it was not live. The id is handed out again later.
    pub fn remove(&mut self, id: u32) -> bool {
        if !self.live.get(id) {
            return false;
        }
        let h = self.hash(self.keys.get(id));
        self.index.remove(h, id);
        self.live.set(id, false);
        if let KeyBytes::Var(keys) = &mut self.keys {
            if let Some(k) = keys.get_mut(id as usize) {
                *k = SlotKey::default();
            }
        }
        self.free.push(id);
        true
    }

    /// Live slot ids in ascending order.
    pub fn iter(&self) -> impl Iterator<Item = u32> + '_ {
        (0..self.ids).filter(|i| self.live.get(*i))
    }

    pub fn clear(&mut self) {
        let tracked = self.written.is_some();
        *self = KeySlots::default();
        if tracked {
            self.track_written();
        }
    }

    /// Incremental cleanup: looks at the next `budget` slot ids (wrapping around), removes the
    /// live ones whose write time `expired` holds for, and returns their ids.
    pub fn sweep(&mut self, budget: usize, mut expired: impl FnMut(u64) -> bool) -> Vec<u32> {
        let mut removed = Vec::new();
        if self.ids == 0 {
            return removed;
        }
        for _ in 0..budget.min(self.ids as usize) {
            if self.sweep_at >= self.ids {
                self.sweep_at = 0;
            }
            let id = self.sweep_at;
            self.sweep_at += 1;
            if self.live.get(id) && expired(self.written(id)) {
                self.remove(id);
                removed.push(id);
            }
        }
        removed
    }

    /// Memory held: index, keys, flags and write times.
    pub fn bytes(&self) -> usize {
        let keys = match &self.keys {
            KeyBytes::Fixed { bytes, .. } => bytes.capacity(),
            KeyBytes::Var(keys) => keys.capacity() * std::mem::size_of::<SlotKey>() + keys.iter().filter(|k| matches!(k, SlotKey::Heap(_))).map(|k| k.len()).sum::<usize>(),
        };
        self.index.entries.capacity() * 8 + keys + self.live.bytes() + self.written.as_ref().map_or(0, |w| w.capacity() * 8) + self.free.capacity() * 4
    }
}

/// Open-addressing index from key hashes to slot ids, with linear probing and backward-shift
/// deletion. An entry packs the upper 32 bits of the key's hash (which also pick its home
/// position) with the slot id plus one (0 marks an empty entry), so a probe touches a slot only
/// when the hash bits match, and a lookup can be prefetched before it is made.
#[derive(Default)]
struct SlotIndex {
    entries: Vec<u64>,
    len: usize,
}

impl SlotIndex {
    fn mask(&self) -> usize {
        self.entries.len() - 1
    }

    #[inline]
    fn home(&self, h: u64) -> usize {
        (h >> 32) as usize & self.mask()
    }

    fn find(&self, h: u64, mut eq: impl FnMut(u32) -> bool) -> Option<u32> {
        if self.entries.is_empty() {
            return None;
        }
        let mask = self.mask();
        let mut at = self.home(h);
        loop {
            let e = self.entries[at];
            if e == 0 {
                return None;
            }
            if e >> 32 == h >> 32 && eq((e as u32) - 1) {
                return Some((e as u32) - 1);
            }
            at = (at + 1) & mask;
        }
    }

    /// Adds slot `id` under hash `h`; `rehash` gives the hash of any slot when the index grows.
    fn insert(&mut self, h: u64, id: u32, rehash: impl Fn(u32) -> u64) {
        // At most 5/8 full, so probe runs stay short.
        if (self.len + 1) * 8 > self.entries.len() * 5 {
            let grown = vec![0; (self.entries.len() * 2).max(16)];
            let old = std::mem::replace(&mut self.entries, grown);
            for e in old.into_iter().filter(|e| *e != 0) {
                self.place(rehash((e as u32) - 1), e);
            }
        }
        self.place(h, ((h >> 32) << 32) | (id as u64 + 1));
        self.len += 1;
    }

    fn place(&mut self, h: u64, entry: u64) {
        let mask = self.mask();
        let mut at = self.home(h);
        while self.entries[at] != 0 {
            at = (at + 1) & mask;
        }
        self.entries[at] = entry;
    }

    /// Removes slot `id` (stored under hash `h`), moving later entries of its probe run back so
    /// that no lookup stops early at the hole.
    fn remove(&mut self, h: u64, id: u32) {
        if self.entries.is_empty() {
            return;
        }
        let mask = self.mask();
        let mut at = self.home(h);
        loop {
            let e = self.entries[at];
            if e == 0 {
                return;
            }
            if (e as u32).wrapping_sub(1) == id {
                break;
            }
            at = (at + 1) & mask;
        }
        let mut hole = at;
        let mut next = (at + 1) & mask;
        loop {
            let e = self.entries[next];
            if e == 0 {
                break;
            }
            let home = (e >> 32) as usize & mask;
            // The entry may fill the hole when the hole lies between its home and where it is.
            if next.wrapping_sub(hole) & mask <= next.wrapping_sub(home) & mask {
                self.entries[hole] = e;
                hole = next;
            }
            next = (next + 1) & mask;
        }
        self.entries[hole] = 0;
        self.len -= 1;
    }
}

/// Asks the processor to start loading `*p` into the cache (a hint: nothing is read).
#[inline]
fn prefetch<T>(p: &T) {
    #[cfg(target_arch = "x86_64")]
    {
        use std::arch::x86_64::{_mm_prefetch, _MM_HINT_T0};
        // SAFETY: a prefetch is a hint that never faults and reads nothing observable; `p` is a
        // valid reference anyway.
        #[allow(unused_unsafe)]
        unsafe {
            _mm_prefetch::<_MM_HINT_T0>((p as *const T).cast::<i8>())
        };
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = p;
}

/// How many rows ahead a batch's lookups prefetch their index entry ...
pub const PREFETCH_ENTRY: usize = 16;
/// ... and then, once that entry is cached, its slot.
pub const PREFETCH_SLOT: usize = 8;

/// Writes snapshot bytes.
#[derive(Default)]
pub struct StateWriter {
    pub buf: Vec<u8>,
}

impl StateWriter {
    pub fn u64(&mut self, v: u64) {
        self.buf.extend_from_slice(&v.to_le_bytes());
    }
    pub fn i64(&mut self, v: i64) {
        self.buf.extend_from_slice(&v.to_le_bytes());
    }
    pub fn bytes(&mut self, b: &[u8]) {
        self.u64(b.len() as u64);
        self.buf.extend_from_slice(b);
    }
}

/// Reads snapshot bytes; truncated or corrupt input is an error, never a panic.
pub struct StateReader<'a> {
    buf: &'a [u8],
}

impl<'a> StateReader<'a> {
    pub fn new(buf: &'a [u8]) -> Self {
        StateReader { buf }
    }
    fn take(&mut self, n: usize) -> Result<&'a [u8]> {
        if self.buf.len() < n {
            return Err(RsqlError::execution("operator state snapshot is truncated"));
        }
        let (a, b) = self.buf.split_at(n);
        self.buf = b;
        Ok(a)
    }
    pub fn u64(&mut self) -> Result<u64> {
        let b = self.take(8)?;
        let mut a = [0u8; 8];
        a.copy_from_slice(b);
        Ok(u64::from_le_bytes(a))
    }
    pub fn i64(&mut self) -> Result<i64> {
        Ok(self.u64()? as i64)
    }
    pub fn bytes(&mut self) -> Result<&'a [u8]> {
        let n = self.u64()?;
        let n = usize::try_from(n).map_err(|_| RsqlError::execution("operator state snapshot is corrupt"))?;
        self.take(n)
    }
    pub fn is_empty(&self) -> bool {
        self.buf.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    /// The index against a map, under random inserts and removals, with hashes drawn from a
    /// few values so that probe runs are long, wrap around the end and share home positions.
    #[test]
    fn slot_index_agrees_with_a_map_under_collisions() {
        use rand::rngs::SmallRng;
        use rand::{Rng, SeedableRng};
        use std::collections::HashMap;
        for seed in 0..20u64 {
            let mut rng = SmallRng::seed_from_u64(seed);
            let mut index = SlotIndex::default();
            let mut model: HashMap<u32, u64> = HashMap::new();
            let hash_of = |id: u32| -> u64 { ((id as u64 * 0x9e37_79b9) % 7) << 32 | 0xdead };
            let mut next = 0u32;
            for _ in 0..3000 {
                if model.is_empty() || rng.random_range(0..3) > 0 {
                    let id = next;
                    next += 1;
                    index.insert(hash_of(id), id, hash_of);
                    model.insert(id, hash_of(id));
                } else {
                    let ids: Vec<u32> = model.keys().copied().collect();
                    let id = ids[rng.random_range(0..ids.len())];
                    index.remove(model[&id], id);
                    model.remove(&id);
                }
                assert_eq!(index.len, model.len());
            }
            for id in 0..next {
                let found = index.find(hash_of(id), |i| i == id);
                assert_eq!(found.is_some(), model.contains_key(&id), "seed {seed}, id {id}");
            }
        }
    }

    #[test]
    fn keyed_store_with_long_keys_and_many_removals_keeps_every_key() {
        let mut s: KeyedStore<usize> = KeyedStore::default();
        let key = |i: usize| format!("{i:0>40}").into_bytes();
        for i in 0..5000 {
            s.insert(&key(i), i, 0);
        }
        for i in (0..5000).step_by(3) {
            let id = s.find(&key(i)).expect("present");
            s.remove(id);
        }
        for i in 0..5000 {
            let found = s.find(&key(i)).and_then(|id| s.get(id)).map(|slot| slot.value);
            assert_eq!(found, (i % 3 != 0).then_some(i), "key {i}");
        }
        assert_eq!(s.len(), 5000 - 5000usize.div_ceil(3));
    }

    #[test]
    fn keyed_store_finds_reuses_and_sweeps_slots() {
        let mut s: KeyedStore<i32> = KeyedStore::default();
        let a = s.insert(b"a", 1, 10);
        let b = s.insert(b"bb", 2, 20);
        assert_eq!(s.find(b"a"), Some(a));
        assert_eq!(s.find(b"bb"), Some(b));
        assert_eq!(s.find(b"c"), None);
        assert_eq!(s.remove(a).map(|x| x.value), Some(1));
        assert_eq!(s.find(b"a"), None);
        // The freed slot is reused.
        let c = s.insert(b"c", 3, 30);
        assert_eq!(c, a);
        assert_eq!(s.len(), 2);
        for i in 0..1000 {
            s.insert(format!("k{i}").as_bytes(), i, 100 + i as u64);
        }
        assert_eq!(s.find(b"k999").and_then(|id| s.get(id)).map(|x| x.value), Some(999));
        // A sweep with a small budget removes only what it looks at; enough sweeps clear all.
        let ttl = StateTtl::with_clock(Duration::from_millis(50), Arc::new(|| 0));
        let removed = s.sweep(10, |slot| ttl.expired(slot.written, 1000));
        assert_eq!(removed, 10);
        s.sweep(2000, |slot| ttl.expired(slot.written, 1000));
        // Written at 951 or later: not expired at 1000.
        assert_eq!(s.len(), 149);
        assert!(s.iter().all(|(_, x)| x.written >= 951));
        assert_eq!(s.find(b"k850"), None);
        assert!(!ttl.expired(1000, 1049));
        assert!(ttl.expired(1000, 1050));
        assert!(!StateTtl::default().expired(0, u64::MAX));
    }

    /// Fixed-width keys switch to per-key storage when a key of another length comes; ids are
    /// reused; a sweep reports what it removed.
    #[test]
    fn key_slots_mix_key_lengths_and_reuse_ids() {
        let mut k = KeySlots::default();
        k.track_written();
        let key = |i: usize| format!("{i:0>5}").into_bytes();
        for i in 0..100 {
            let h = k.hash(&key(i));
            assert_eq!(k.insert_hashed(h, &key(i), i as u64), i as u32);
        }
        assert!(k.remove(7));
        assert!(!k.remove(7));
        let long = b"a key much longer than five bytes".to_vec();
        let h = k.hash(&long);
        assert_eq!(k.insert_hashed(h, &long, 500), 7, "the freed id is reused");
        for i in (0..100).filter(|i| *i != 7) {
            assert_eq!(k.find(&key(i)), Some(i as u32), "key {i}");
            assert_eq!(k.key(i as u32), &key(i)[..]);
        }
        assert_eq!(k.find(&long), Some(7));
        assert_eq!(k.find(&key(7)), None);
        let removed = k.sweep(1000, |written| written < 50);
        assert_eq!(removed, (0..50).filter(|i| *i != 7).collect::<Vec<u32>>());
        assert_eq!(k.len(), 51);
        assert_eq!(k.iter().next(), Some(7));
        assert_eq!(k.written(7), 500);
    }
}
