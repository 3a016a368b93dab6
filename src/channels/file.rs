use super::{Delivery, DeliveryResult};
use crate::model::FileChannel;

pub struct FileSpool;
impl FileSpool {
    pub async fn write(_c: &FileChannel, _d: &Delivery<'_>) -> DeliveryResult {
        todo!()
    }
}
