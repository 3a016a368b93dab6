use super::{Delivery, DeliveryResult, TransportError};
use crate::model::HttpChannel;

pub struct HttpSender;
impl HttpSender {
    pub fn new() -> Result<Self, TransportError> {
        Ok(Self)
    }
    pub async fn send(&self, _c: &HttpChannel, _d: &Delivery<'_>) -> DeliveryResult {
        todo!()
    }
}
