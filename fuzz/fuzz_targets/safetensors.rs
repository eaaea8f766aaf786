//! model.safetensors: the 8-byte header length, the JSON header (dtypes, shapes, offsets) and
//! the tensor data read back through those offsets.
#![no_main]

use libfuzzer_sys::fuzz_target;
use webtune::io::safetensors::SafeTensorsFile;
use webtune_fuzz::check;

fuzz_target!(|data: &[u8]| {
    check(data.len(), || {
        let f = SafeTensorsFile::parse("model.safetensors", data.to_vec())?;
        // Reading is where offsets and shapes are trusted; parse alone proves little.
        let names: Vec<String> = f.tensors.keys().cloned().collect();
        for name in names {
            let _ = f.read_f32(&name);
        }
        Ok(())
    });
});
