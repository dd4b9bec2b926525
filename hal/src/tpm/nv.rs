//! The monotonic counter: a TPM NV index of type counter (8 bytes), owner-authorised. A TPM
//! counter can only go up, and it survives reboots and restores of the disk: that is what makes
//! a rolled-back journal detectable.

use tss_esapi::Error as TssError;
use tss_esapi::attributes::{NvIndexAttributes, NvIndexAttributesBuilder};
use tss_esapi::constants::Tss2ResponseCodeKind;
use tss_esapi::constants::nv_index_type::NvIndexType;
use tss_esapi::handles::{NvIndexHandle, NvIndexTpmHandle, TpmHandle};
use tss_esapi::interface_types::algorithm::HashingAlgorithm;
use tss_esapi::interface_types::resource_handles::{NvAuth, Provision};
use tss_esapi::interface_types::session_handles::AuthSession;
use tss_esapi::structures::{NvPublic, NvPublicBuilder};
use tss_esapi::tss2_esys::TPMA_NV;

use super::TpmState;
use super::objects::ForeignPlace;
use crate::{ForeignEviction, HalError};

const PASSWORD: Option<AuthSession> = Some(AuthSession::Password);

fn is_uninitialized(e: &TssError) -> bool {
    matches!(e, TssError::Tss2Error(rc) if rc.kind() == Some(Tss2ResponseCodeKind::NvUninitialized))
}

/// posguard's counter index: owner-authorised only (owner authorisation is not
/// dictionary-attack protected), noDA, a counter.
fn counter_attributes() -> Result<NvIndexAttributes, HalError> {
    NvIndexAttributesBuilder::new()
        .with_owner_write(true)
        .with_owner_read(true)
        .with_no_da(true)
        .with_nv_index_type(NvIndexType::Counter)
        .build()
        .map_err(HalError::tpm("build NV counter attributes"))
}

/// Attribute bits without those the TPM sets as the index is used (written, read and write
/// locks): what was chosen when the index was defined.
fn defined_bits(attributes: NvIndexAttributes) -> Result<u32, HalError> {
    const RUNTIME: u32 = (1 << 11) | (1 << 28) | (1 << 29);
    let raw = TPMA_NV::try_from(attributes).map_err(HalError::tpm("NV index attributes"))?;
    Ok(raw & !RUNTIME)
}

/// Whether an NV index is what posguard defines for its counter.
fn is_our_counter(public: &NvPublic) -> Result<bool, HalError> {
    Ok(
        defined_bits(public.attributes())? == defined_bits(counter_attributes()?)?
            && public.data_size() == 8
            && public.name_algorithm() == HashingAlgorithm::Sha256
            && public.authorization_policy().value().is_empty(),
    )
}

/// What an NV index is, for "not ours" messages.
fn describe(public: &NvPublic) -> String {
    let a = public.attributes();
    let kind = a.index_type().ok();
    let da = if a.no_da() {
        "noDA"
    } else {
        "dictionary-attack protected"
    };
    format!(
        "NV index of type {kind:?}, {} bytes, {da}",
        public.data_size()
    )
}

impl TpmState {
    fn index(&self) -> Result<NvIndexTpmHandle, HalError> {
        NvIndexTpmHandle::new(self.counter_index).map_err(HalError::tpm("NV index"))
    }

    fn location(&self) -> String {
        format!("NV index {:#010x}", self.counter_index)
    }

    /// Opens the counter index if it exists and is a counter; `None` if absent.
    fn open_counter(&mut self) -> Result<Option<NvIndexHandle>, HalError> {
        if let Some(h) = self.counter {
            return Ok(Some(h));
        }
        if !self.handle_exists(self.counter_index)? {
            return Ok(None);
        }
        let object = self
            .ctx
            .tr_from_tpm_public(TpmHandle::NvIndex(self.index()?))
            .map_err(HalError::tpm("open NV index"))?;
        let handle = NvIndexHandle::from(object);
        let (public, _) = self
            .ctx
            .nv_read_public(handle)
            .map_err(HalError::tpm("read NV public area"))?;
        if !is_our_counter(&public)? {
            return Err(self.foreign_described(ForeignPlace::Counter, describe(&public)));
        }
        self.counter = Some(handle);
        Ok(Some(handle))
    }

    fn read_value(&mut self, handle: NvIndexHandle) -> Result<Option<u64>, HalError> {
        let result = self
            .ctx
            .execute_with_session(PASSWORD, |ctx| ctx.nv_read(NvAuth::Owner, handle, 8, 0));
        match result {
            Ok(buf) => {
                let arr: [u8; 8] = buf.value().try_into().map_err(|_| HalError::Unexpected {
                    operation: "read counter",
                    detail: format!("{} bytes instead of 8", buf.value().len()),
                })?;
                Ok(Some(u64::from_be_bytes(arr)))
            }
            Err(e) if is_uninitialized(&e) => Ok(None),
            Err(e) => Err(HalError::Tpm {
                operation: "read counter",
                source: e,
            }),
        }
    }

    fn increment(&mut self, handle: NvIndexHandle) -> Result<(), HalError> {
        self.ctx
            .execute_with_session(PASSWORD, |ctx| ctx.nv_increment(NvAuth::Owner, handle))
            .map_err(HalError::tpm("increment counter"))
    }

    pub(crate) fn counter_create(&mut self) -> Result<u64, HalError> {
        let handle = match self.open_counter()? {
            Some(h) => h,
            None => {
                // Fresh index: give it its first increment before anyone reads it.
                let attrs = counter_attributes()?;
                let public = NvPublicBuilder::new()
                    .with_nv_index(self.index()?)
                    .with_index_name_algorithm(HashingAlgorithm::Sha256)
                    .with_index_attributes(attrs)
                    .with_data_area_size(8)
                    .build()
                    .map_err(HalError::tpm("build NV counter public area"))?;
                let h = self
                    .ctx
                    .execute_with_session(PASSWORD, |ctx| {
                        ctx.nv_define_space(Provision::Owner, None, public)
                    })
                    .map_err(HalError::tpm("define NV counter"))?;
                self.counter = Some(h);
                self.increment(h)?;
                h
            }
        };
        // A counter cannot be read before its first increment (the TPM then starts it at the
        // highest value any counter on this TPM has had, so it never goes back).
        match self.read_value(handle)? {
            Some(v) => Ok(v),
            None => {
                self.increment(handle)?;
                self.read_value(handle)?
                    .ok_or_else(|| HalError::Unexpected {
                        operation: "create counter",
                        detail: "counter still uninitialised after its first increment".to_owned(),
                    })
            }
        }
    }

    fn existing_counter(&mut self) -> Result<NvIndexHandle, HalError> {
        self.open_counter()?.ok_or_else(|| HalError::NoCounter {
            location: self.location(),
        })
    }

    pub(crate) fn counter_read(&mut self) -> Result<u64, HalError> {
        let handle = self.existing_counter()?;
        self.read_value(handle)?.ok_or_else(|| HalError::NoCounter {
            location: self.location(),
        })
    }

    pub(crate) fn counter_increment(&mut self) -> Result<u64, HalError> {
        let handle = self.existing_counter()?;
        self.increment(handle)?;
        self.read_value(handle)?
            .ok_or_else(|| HalError::Unexpected {
                operation: "increment counter",
                detail: "counter uninitialised after increment".to_owned(),
            })
    }

    /// The technician's named removal of an NV index posguard did not define at the counter
    /// index.
    pub(crate) fn undefine_foreign_counter(&mut self) -> Result<ForeignEviction, HalError> {
        if !self.handle_exists(self.counter_index)? {
            return Ok(ForeignEviction::Absent);
        }
        let object = self
            .ctx
            .tr_from_tpm_public(TpmHandle::NvIndex(self.index()?))
            .map_err(HalError::tpm("open NV index"))?;
        let handle = NvIndexHandle::from(object);
        let (public, _) = self
            .ctx
            .nv_read_public(handle)
            .map_err(HalError::tpm("read NV public area"))?;
        if is_our_counter(&public)? {
            return Ok(ForeignEviction::Ours);
        }
        let what = describe(&public);
        self.ctx
            .execute_with_session(PASSWORD, |ctx| {
                ctx.nv_undefine_space(Provision::Owner, handle)
            })
            .map_err(HalError::tpm("undefine a foreign NV index"))?;
        self.counter = None;
        Ok(ForeignEviction::Evicted(what))
    }

    /// Undefines the counter index if present (decommissioning).
    pub(crate) fn counter_delete(&mut self) -> Result<(), HalError> {
        let Some(handle) = self.open_counter()? else {
            return Ok(());
        };
        self.counter = None;
        self.ctx
            .execute_with_session(PASSWORD, |ctx| {
                ctx.nv_undefine_space(Provision::Owner, handle)
            })
            .map_err(HalError::tpm("undefine NV counter"))
    }
}
